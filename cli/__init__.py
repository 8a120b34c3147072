"""The command line: argv in, exit code out.

Top of the import graph: ``cli`` may import every other pybuild package, and
nothing imports ``cli``.  It is the only place that calls ``trio.run``.  Each
command lives in its own module, imported only when that command runs, so
``pybuild --help`` and ``pybuild --version`` load nothing heavy.
"""
