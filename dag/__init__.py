"""The build graph: ops, Dockerfile -> graph conversion, and the trio solver.

Imports ``grammar`` (instructions), and reaches ``oci``, ``cache`` and
``executors`` only through the small Protocols declared here, so solver tests
run with fakes and no root.  ``networkx`` is imported here and nowhere else.
"""
