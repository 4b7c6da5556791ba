"""A site run by gunicorn, with a bus for its own services.

    gunicorn --chdir examples/hosted_gunicorn counter_site:application

gunicorn owns the sockets, the signals and the workers; ``wspbus.attach()`` starts the
bus in each worker and stops it when the worker exits (SIGTERM to gunicorn, a reload, a
max-requests recycle). The HitCounter plugin shows why both ends matter: 'start' loads the
count saved by the previous run, 'stop' ends its flusher thread and saves the count.
"""

import json
import os
import threading

import wspbus
from wspbus.plugins import SimplePlugin

HITS_FILE = os.environ.get("HITS_FILE", "hits.json")
FLUSH_EVERY = float(os.environ.get("HITS_FLUSH_EVERY", "5"))


class HitCounter(SimplePlugin):
    """Counts requests; the count survives restarts of the site."""

    def __init__(self, bus, path, flush_every=5.0):
        super().__init__(bus)
        self.path = path
        self.flush_every = flush_every
        self.hits = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._flusher = None

    def start(self):
        try:
            with open(self.path) as file:
                self.hits = json.load(file)["hits"]
        except FileNotFoundError:
            self.hits = 0
        self._stopping.clear()
        # Not a daemon thread: it must not be cut off in the middle of a write.
        self._flusher = threading.Thread(target=self._flush_periodically, name="hit flusher")
        self._flusher.start()
        self.bus.log("HitCounter loaded %d hits from %s" % (self.hits, self.path))

    def stop(self):
        if self._flusher is not None:
            self._stopping.set()
            self._flusher.join()
            self._flusher = None
        self.save()
        self.bus.log("HitCounter saved %d hits to %s" % (self.hits, self.path))

    def hit(self):
        with self._lock:
            self.hits += 1
            return self.hits

    def save(self):
        with self._lock:
            record = {"hits": self.hits, "pid": os.getpid()}
        temporary = "%s.%d.tmp" % (self.path, os.getpid())
        with open(temporary, "w") as file:
            json.dump(record, file)
        os.replace(temporary, self.path)

    def _flush_periodically(self):
        while not self._stopping.wait(self.flush_every):
            self.save()


counter = HitCounter(wspbus.bus, HITS_FILE, FLUSH_EVERY)


def app(environ, start_response):
    body = ("hit %d, served by worker %d\n" % (counter.hit(), os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


application = wspbus.attach(app, plugins=[counter])
