"""``pybuild worker``: a Remote Workers API (bots) worker for a REAPI cluster.

It leases the Actions a ``pybuild build --remote-executor`` sends (the format
is ``dag.remote``'s), brings each input's layers into its own pybuild root as
snapshots (once per chain, kept between Actions), runs the step with the
local runner (``dag.Worker``: the same sandbox, this worker's cache mounts),
and uploads the new layer tar and ``result.json``.  ``reapi`` is the
protocol; this package is imported only by the worker command.

    serve              the worker's life: one bot session until a signal drains it
    BotOptions         its name, platform and --jobs
    worker_properties  the platform properties it offers (OSFamily, ISA, pybuild-sandbox)

The session talks to the Bots service through the ``LeaseSource`` seam: ``BotsConnection``
on ``reapi``, the fake ``dag.bot.fake.MemoryLeases``, and ``check_lease_source`` (run against
both in tests/remote) for what the session relies on.
"""

from ._serve import BotOptions as BotOptions
from ._serve import serve as serve
from ._serve import worker_properties as worker_properties
