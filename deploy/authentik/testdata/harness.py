"""Runs the blueprint's expression policies the way Authentik does, for blueprint_test.go.

Reads one JSON request on stdin and writes one JSON answer on stdout. The request carries the
!Format template and its arguments; the expression is made with the same `template % args`
Authentik uses, then wrapped in a `def handler(...)` whose parameters are the policy context.

Modes:
  compile  compile the wrapped expression; answer {"ok": true} or {"error": "..."}
  inspect  answer facts about the expression's syntax tree (returns, raises, top level)
  run      execute it with a fake `requests` and the given flow context; answer the result,
           the ak_message texts, the HTTP calls made and any exception that escaped
"""

import ast
import json
import sys
import textwrap
from types import SimpleNamespace

# The names Authentik passes as the handler's parameters (PolicyEvaluator context).
PARAMS = [
    "ak_logger",
    "ak_message",
    "ip_address",
    "ip_network",
    "ak_is_sso_flow",
    "request",
    "context",
    "http_request",
    "ak_client_ip",
]

# Context entries Authentik holds as model objects; the request gives them as JSON objects.
OBJECT_KEYS = ("source", "pending_user", "goauthentik.io/sources/connection")


def wrap(expression):
    signature = ",".join(PARAMS)
    return (
        f"def handler({signature}):\n"
        + textwrap.indent(expression, "    ")
        + f"\nresult = handler({signature})"
    )


class FakeResponse:
    def __init__(self, spec):
        self.status_code = spec.get("status", 200)
        self._spec = spec

    def json(self):
        if "json" in self._spec:
            return self._spec["json"]
        return json.loads(self._spec.get("text", ""))


class BridgeDown(Exception):
    """Stands in for requests' ConnectionError and Timeout."""


class FakeRequests:
    def __init__(self, spec):
        self.spec = spec
        self.calls = []

    def post(self, url, json=None, headers=None, timeout=None, **kwargs):
        self.calls.append(
            {"url": url, "json": json, "headers": headers, "timeout": timeout, "extra": sorted(kwargs)}
        )
        if self.spec.get("raise"):
            raise BridgeDown(self.spec["raise"])
        return FakeResponse(self.spec.get("response") or {})


class FakeLogger:
    def __init__(self):
        self.lines = []

    def _log(self, level, event, **kw):
        self.lines.append({"level": level, "event": event, "fields": {k: str(v) for k, v in kw.items()}})

    def debug(self, event, **kw):
        self._log("debug", event, **kw)

    def info(self, event, **kw):
        self._log("info", event, **kw)

    def warning(self, event, **kw):
        self._log("warning", event, **kw)

    def error(self, event, **kw):
        self._log("error", event, **kw)


def build_context(raw):
    ctx = {}
    for key, value in (raw or {}).items():
        if key in OBJECT_KEYS and isinstance(value, dict):
            value = SimpleNamespace(**value)
        ctx[key] = value
    return ctx


def run(expression, req):
    messages = []
    logger = FakeLogger()
    fake = FakeRequests(req)
    context = build_context(req.get("context"))
    params = {name: None for name in PARAMS}
    params.update(
        ak_logger=logger,
        ak_message=messages.append,
        ak_is_sso_flow=True,
        context=context,
        request=SimpleNamespace(context=context),
    )
    code = compile(wrap(expression), "policy", "exec")
    answer = {"messages": messages, "calls": fake.calls, "logs": logger.lines}
    try:
        exec(code, {"requests": fake, "ak_logger": logger}, params)  # noqa: S102
        result = params["result"]
        answer["result"] = result if isinstance(result, (bool, type(None))) else repr(result)
    except Exception as exc:  # the policy engine would turn this into a failed result
        answer["escaped"] = f"{exc.__class__.__name__}: {exc}"
    return answer


def inspect(expression):
    handler = ast.parse(wrap(expression)).body[0]
    returns = [
        ast.unparse(node.value) if node.value is not None else "None"
        for node in ast.walk(handler)
        if isinstance(node, ast.Return)
    ]
    raises = sum(isinstance(node, ast.Raise) for node in ast.walk(handler))
    top = [type(stmt).__name__ for stmt in handler.body]
    handlers = [
        ast.unparse(h.type) if h.type is not None else "bare"
        for stmt in handler.body
        if isinstance(stmt, ast.Try)
        for h in stmt.handlers
    ]
    last = ast.unparse(handler.body[-1]) if handler.body else ""
    return {"returns": returns, "raises": raises, "top": top, "handlers": handlers, "last": last}


def main():
    req = json.load(sys.stdin)
    try:
        expression = req["template"] % tuple(req["args"])
    except (TypeError, ValueError) as exc:
        json.dump({"error": f"format: {exc}"}, sys.stdout)
        return
    mode = req["mode"]
    if mode == "compile":
        try:
            compile(wrap(expression), "policy", "exec")
            answer = {"ok": True}
        except SyntaxError as exc:
            answer = {"error": f"{exc.msg} at line {exc.lineno}: {exc.text!r}"}
    elif mode == "inspect":
        answer = inspect(expression)
    else:
        answer = run(expression, req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
