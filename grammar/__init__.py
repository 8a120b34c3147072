"""The Dockerfile front end: text -> frozen instructions and stages.

Bottom of the import graph: ``grammar`` imports no other pybuild package
(only ``pybuild.errors``), and ``lark`` is imported here and nowhere else;
no lark type leaves this package.  Everything here is synchronous.
"""
