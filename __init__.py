"""pybuild: a Dockerfile build engine.

General layout (DESIGN.md). Each folder is one layer and imports point one way:

    cli -> dag -> oci -> cache -> grammar
            dag -> executors -> grammar

An arrow means "may import".  ``executors`` sits beside ``oci`` and ``cache``
and knows neither.

``cli`` wires real implementations together and is the only place that calls
``trio.run``.  ``dag`` reaches the lower layers through small Protocols, so its
tests run with fakes.  ``errors``, ``_version`` and ``_lazy`` (the first-use
loader of the packages' deferred names) sit beside the layers and import
nothing from them.  This module imports nothing, so ``pybuild --version``
stays fast.
"""

from ._version import __version__ as __version__
