"""moto behind a front that throttles like AWS (issue 18's scale harness).

Run with moto's Python: `python3 moto_throttled.py -H HOST -p PORT [--bucket
100 --refill 20 --cache-ttl 1.0] --log FILE`.

Why: moto answers every request itself, in one Python process, and a
DescribeInstances over 500 instances takes it a sizeable fraction of a
second; 500 booting agents then queue requests until their clients time
out and nothing gets through (congestion collapse). AWS does not queue: it
answers at once from a token bucket and refuses what exceeds it with a
throttling error the caller retries with backoff. This front puts that
behaviour in front of moto:

- Token buckets, as documented by AWS. EC2: one bucket per API action; a
  non-mutating action (Describe*) holds 100 tokens and refills 20 a second
  (docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html); over it
  EC2 answers HTTP 503 `RequestLimitExceeded`. EC2 Auto Scaling: one bucket
  shared by all its actions (AWS knowledge center, "autoscaling-api-calls-
  throttled"); its size is not published, so it takes the same figures
  unless `--asg-bucket/--asg-refill` say otherwise (an assumption, stated in
  docs/benchmarks.md); over it Auto Scaling answers HTTP 400 `Throttling`
  ("Rate exceeded"). Mutating calls (the harness's setup) are not throttled.
- Read answers are cached: an identical read (same service and form body)
  within `--cache-ttl` seconds gets the answer moto gave, and any write
  empties the cache; concurrent identical reads wait for one moto call.
  This keeps moto's own CPU from being what is measured: AWS answers a
  describe in about the same time at any fleet size. A cached answer still
  costs its token.

Every request is logged as one line `<unix time> <service> <action>
<answered|cached|throttled>` to `--log`, which the benchmark and tests count.
"""

import argparse
import io
import sys
import threading
import time
import urllib.parse
import uuid

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple

READ_PREFIXES = ("Describe", "List", "Get")


class Bucket:
    """A token bucket: `size` tokens, `refill` added per second."""

    def __init__(self, size, refill):
        self.size = float(size)
        self.refill = float(refill)
        self.tokens = float(size)
        self.stamp = time.monotonic()

    def take(self):
        now = time.monotonic()
        self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.refill)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def service_of(environ):
    """The SigV4 credential scope's service (`.../us-east-1/ec2/aws4_request`)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    at = auth.find(marker)
    if at < 0:
        return "unknown"
    scope = auth[at + len(marker):].split(",")[0].split("/")
    return scope[3] if len(scope) > 3 else "unknown"


def throttled_answer(service):
    request_id = str(uuid.uuid4())
    if service == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
        return "503 Service Unavailable", body
    body = (
        '<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
        "<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
        f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return "400 Bad Request", body


class Front:
    def __init__(self, app, args, log):
        self.app = app
        self.args = args
        self.log = log
        self.lock = threading.Lock()
        self.buckets = {}
        self.cache = {}
        self.inflight = {}

    def bucket(self, service, action):
        if service == "autoscaling":
            key, size, refill = "autoscaling", self.args.asg_bucket, self.args.asg_refill
        else:
            key, size, refill = f"{service}:{action}", self.args.bucket, self.args.refill
        if key not in self.buckets:
            self.buckets[key] = Bucket(size, refill)
        return self.buckets[key]

    def record(self, service, action, outcome):
        with self.lock:
            self.log.write(f"{time.time():.3f} {service} {action} {outcome}\n")
            self.log.flush()

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        action = form.get("Action", ["?"])[0]
        service = service_of(environ)
        read = action.startswith(READ_PREFIXES)
        if read:
            with self.lock:
                allowed = self.bucket(service, action).take()
            if not allowed:
                self.record(service, action, "throttled")
                status, text = throttled_answer(service)
                start_response(status, [("Content-Type", "text/xml")])
                return [text.encode()]
            return self.read(environ, start_response, (service, body), service, action)
        with self.lock:
            self.cache.clear()
        result = self.call(environ)
        self.record(service, action, "answered")
        return self.reply(result, start_response)

    def read(self, environ, start_response, key, service, action):
        while True:
            with self.lock:
                hit = self.cache.get(key)
                if hit and time.monotonic() - hit[0] < self.args.cache_ttl:
                    outcome, result = "cached", hit[1]
                    break
                waiting = self.inflight.get(key)
                if waiting is None:
                    done = threading.Event()
                    self.inflight[key] = done
                    outcome = None
                    break
            waiting.wait()
        if outcome is None:
            try:
                result = self.call(environ)
                with self.lock:
                    if result[0].startswith("200"):
                        self.cache[key] = (time.monotonic(), result)
            finally:
                with self.lock:
                    del self.inflight[key]
                done.set()
            outcome = "answered"
        self.record(service, action, outcome)
        return self.reply(result, start_response)

    def call(self, environ):
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers

        chunks = self.app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        return captured["status"], headers, body

    @staticmethod
    def reply(result, start_response):
        status, headers, body = result
        start_response(status, headers)
        return [body]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--bucket", type=float, default=100, help="EC2 read bucket size")
    parser.add_argument("--refill", type=float, default=20, help="EC2 read tokens per second")
    parser.add_argument("--asg-bucket", type=float, default=None)
    parser.add_argument("--asg-refill", type=float, default=None)
    parser.add_argument("--cache-ttl", type=float, default=1.0)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    if args.asg_bucket is None:
        args.asg_bucket = args.bucket
    if args.asg_refill is None:
        args.asg_refill = args.refill
    log = open(args.log, "a", encoding="utf-8")
    app = Front(DomainDispatcherApplication(create_backend_app), args, log)
    print(
        f"throttling front: ec2 reads {args.bucket:g}/{args.refill:g} per s, "
        f"autoscaling {args.asg_bucket:g}/{args.asg_refill:g} per s, cache {args.cache_ttl:g} s",
        file=sys.stderr,
        flush=True,
    )
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
