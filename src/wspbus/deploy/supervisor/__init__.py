"""``wspbus serve --workers N``: a supervisor process and N worker processes, each with its own bus.

One module per job: ``supervise`` builds the supervisor's bus and runs it; ``arbiter`` is its
plugin that owns the workers; ``pool`` follows their generations on an event loop; ``process``
starts one worker and sees it end (pidfd); ``worker`` is the worker's entry point
(``python -m wspbus.deploy.supervisor.worker``); ``channel`` is the line protocol between the two;
``listeners`` binds the sockets every worker inherits; ``control_socket`` and ``client`` carry
``wspbus reload`` and ``wspbus status``; ``status`` writes the status file; ``backoff``,
``heartbeat`` and ``counting`` do one thing each. docs/supervisor.md tells how it fits together.
"""
