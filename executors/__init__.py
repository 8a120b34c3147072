"""Running processes: the RUN sandbox (namespaces, overlay rootfs, mounts,
network, user, capabilities) and a fake executor for tests.

Imports no other pybuild layer except ``grammar`` types; ``pyroute2`` is
imported here and nowhere else.
"""
