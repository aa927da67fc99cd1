"""`polyprobe probe`: a command-line client of a running server's robustness probe endpoints.

`probe run MODEL` sends a probe (`POST /v1/models/{model}/probe`), `probe compare A B` a paired
comparison (`POST /v1/probe/compare`); with `--job` either goes through the jobs API, shows the
progress from the job's event stream and fetches the result (Ctrl-C cancels the job). Inputs come
from JSONL files of sentence pairs (`sentence1`/`sentence2`, `premise`/`hypothesis` or
`text`/`text_pair`, optional `label`, `lang`, `id`); a file named like a language tag (de.jsonl)
gives its rows that language. The report is a per-language table with intervals, followed by the
server's warnings (e.g. one class dominating the clean predictions); `--json` prints the body.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

from polyprobe.ids import parse_id_range

if TYPE_CHECKING:
    import httpx

_PAIR_FIELDS = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("text", "text_pair"))
_LANG_FILE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$")
_SINGLE_FIELDS = ("text", "sentence")

JSON = dict[str, Any]


class ClientError(Exception):
    """A problem the user can fix: bad data, a refused request, an unreachable server."""


def read_inputs(
    paths: Sequence[Path],
    labels: Sequence[str],
    *,
    limit: int | None,
    with_labels: bool,
    ids: range | None = None,
) -> list[JSON]:
    """Probe inputs from JSONL rows, only those whose integer `id` is in `ids` when given (so a
    probe can stay on a model's held-out ids). An integer label is an index into the model's
    labels (as in PAWS-X, where 1 = paraphrase); ids are prefixed with the file name to stay
    unique."""
    inputs: list[JSON] = []
    for path in paths:
        stem_lang = path.stem if _LANG_FILE.match(path.stem) else None
        taken = 0
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ClientError(f"cannot read {path}: {error.strerror}") from None
        for number, line in enumerate(lines, start=1):
            if limit is not None and taken >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ClientError(f"{where} is not JSON: {error.msg}") from None
            if not isinstance(row, dict):
                raise ClientError(f"{where} is not a JSON object")
            if ids is not None and not _in_range(row.get("id"), ids, where):
                continue
            item = _input(row, where)
            if with_labels and row.get("label") is not None:
                item["label"] = _label(row["label"], labels, where)
            lang = row.get("lang", stem_lang)
            if isinstance(lang, str):
                item["lang"] = lang
            item["id"] = f"{path.stem}-{row.get('id', number)}"
            inputs.append(item)
            taken += 1
        if not taken:
            within = f" with ids {ids.start}-{ids.stop - 1}" if ids is not None else ""
            raise ClientError(f"{path} has no rows{within}")
    return inputs


def _in_range(row_id: object, ids: range, where: str) -> bool:
    if isinstance(row_id, bool) or not isinstance(row_id, int):
        raise ClientError(f"{where}: --ids needs an integer `id` on every row, got {row_id!r}")
    return row_id in ids


def _input(row: JSON, where: str) -> JSON:
    for first, second in _PAIR_FIELDS:
        if isinstance(row.get(first), str) and isinstance(row.get(second), str):
            return {"text": row[first], "text_pair": row[second]}
    for name in _SINGLE_FIELDS:
        if isinstance(row.get(name), str):
            return {"text": row[name]}
    fields = ", ".join(f"{a}/{b}" for a, b in _PAIR_FIELDS)
    raise ClientError(f"{where} has no text: expected one of {fields}, or text alone")


def _label(value: object, labels: Sequence[str], where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ClientError(f"{where}: label {value!r} is neither a label name nor an index")
    if isinstance(value, str):
        return value
    if not 0 <= value < len(labels):
        raise ClientError(
            f"{where}: label index {value} is out of range for the model's labels "
            f"({', '.join(labels)})"
        )
    return labels[value]


def perturbations(args: argparse.Namespace) -> list[JSON]:
    """One spec per --family (comma-separated names allowed), all with the same options."""
    names = [name.strip() for spec in args.family for name in spec.split(",") if name.strip()]
    specs = []
    for name in names:
        spec: JSON = {"family": name, "severity": args.severity, "samples": args.samples}
        if name == "attack":
            if args.query_budget is not None:
                spec["query_budget"] = args.query_budget
            if args.edits:
                spec["edits"] = [e.strip() for e in args.edits.split(",") if e.strip()]
        specs.append(spec)
    return specs


def _httpx() -> ModuleType:
    # Imported on use: `polyprobe serve` on a serving-only install has no httpx.
    try:
        return importlib.import_module("httpx")
    except ImportError:
        raise ClientError(
            "the probe client needs httpx: pip install 'polyprobe[loadtest]'"
        ) from None


class ProbeClient:
    """The server's probe endpoints over one httpx client."""

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        self._httpx = _httpx()
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http: httpx.Client = self._httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout
        )

    def __enter__(self) -> ProbeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: JSON | None = None) -> JSON:
        try:
            response = self._http.request(method, path, json=body)
        except self._httpx.HTTPError as error:
            base = str(self._http.base_url).rstrip("/")
            raise ClientError(f"{method} {base}{path} failed: {error}") from None
        return _json_or_error(response, f"{method} {path}")

    def labels(self, model: str) -> list[str]:
        manifest = self._call("GET", f"/v1/models/{model}")["manifest"]
        return list(manifest["labels"])

    def probe(self, model: str, body: JSON) -> JSON:
        return self._call("POST", f"/v1/models/{model}/probe", body)

    def compare(self, body: JSON) -> JSON:
        return self._call("POST", "/v1/probe/compare", body)

    def submit(self, body: JSON) -> JSON:
        return self._call("POST", "/v1/probe/jobs", body)

    def job(self, job_id: str) -> JSON:
        return self._call("GET", f"/v1/probe/jobs/{job_id}")

    def cancel(self, job_id: str) -> JSON:
        return self._call("DELETE", f"/v1/probe/jobs/{job_id}")

    def events(self, job_id: str) -> Iterator[tuple[str, JSON]]:
        """The job's server-sent events, as (event name, data), until the stream ends."""
        path = f"/v1/probe/jobs/{job_id}/events"
        try:
            with self._http.stream("GET", path, timeout=None) as response:
                if response.status_code != 200:
                    response.read()
                    _json_or_error(response, f"GET {path}")
                name = "message"
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        name = line.removeprefix("event:").strip()
                    elif line.startswith("data:"):
                        yield name, json.loads(line.removeprefix("data:"))
        except self._httpx.HTTPError as error:
            raise ClientError(f"GET {path} failed: {error}") from None


def _json_or_error(response: httpx.Response, what: str) -> JSON:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    message = response.text[:500]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = str(body["error"].get("message", message))
    raise ClientError(f"{what}: HTTP {response.status_code}: {message}")


def run_job(client: ProbeClient, body: JSON, progress: IO[str]) -> JSON:
    """Submit a job, print its progress events, return its result; Ctrl-C cancels it."""
    job = client.submit(body)
    job_id = job["id"]
    print(f"job {job_id} submitted", file=progress)
    try:
        last: JSON | None = None
        for name, data in client.events(job_id):
            if name == "progress":
                print(_progress_line(data), file=progress)
                last = data
        done = client.job(job_id)
        # A job that ends before the stream opens sends no progress event: show where it ended.
        final = {"state": done["status"], **done["progress"]}
        if last is None or {k: last.get(k) for k in final} != final:
            print(_progress_line(final), file=progress)
    except KeyboardInterrupt:
        client.cancel(job_id)
        raise ClientError(f"interrupted: job {job_id} cancelled") from None
    if done["status"] != "succeeded":
        error = done.get("error") or {}
        raise ClientError(f"job {job_id} {done['status']}: {error.get('message', 'no result')}")
    result: JSON = done["result"]
    return result


def _progress_line(data: JSON) -> str:
    total = data["evaluations_total"]
    done = data["evaluations_done"]
    share = f" ({done / total:.0%})" if total else ""
    return (
        f"  {data['state']}: {data['phase']}: {done}/{total or '?'} evaluations{share}, "
        f"{data['perturbations_done']}/{data['perturbations_total']} perturbations"
    )


def fmt(interval: JSON | None) -> str:
    if interval is None or interval.get("estimate") is None:
        return "-"
    return f"{interval['estimate']:.3f} [{interval['ci_low']:.3f}, {interval['ci_high']:.3f}]"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, ["-" * w for w in widths], *rows)
    ]
    return "\n".join(lines)


def render_probe(report: JSON) -> str:
    model = report["model"]
    out = [
        f"model {model['name']}/{model['version']} ({model['precision']}, sha256 "
        f"{model['sha256'][:12]}), seed {report['seed']}, {report['confidence']:.0%} intervals"
    ]
    languages = report["languages"]
    if languages:
        out += [
            "",
            "clean predictions per language",
            table(
                ["lang", "n", "accuracy", "dominant label"],
                [
                    [
                        g["group"],
                        str(g["n_inputs"]),
                        fmt(g["clean_accuracy"]),
                        f"{g['clean_predictions']['dominant_label']} "
                        f"({g['clean_predictions']['dominant_share'] or 0:.0%})",
                    ]
                    for g in languages
                ],
            ),
        ]
    cells = report["invariance"]["by_language"]
    if cells:
        out += [
            "",
            "invariance (label-preserving) perturbations per language",
            table(
                ["lang", "family", "sev", "n", "no-op", "clean acc", "perturbed acc", "flip rate",
                 "p (Holm)"],
                [
                    [c["group"], c["family"], f"{c['severity']:g}", str(c["n_inputs"]),
                     str(c["n_noop"]), fmt(c["clean_accuracy"]), fmt(c["perturbed_accuracy"]),
                     fmt(c["flip_rate"]), _p(c["mcnemar"]["p_holm"])]
                    for c in cells
                ],
            ),
        ]  # fmt: skip
    directional = report["directional"]["by_language"]
    if directional:
        out += [
            "",
            "directional (label-changing) perturbations per language",
            table(
                ["lang", "family", "sev", "n", "change rate"],
                [
                    [c["group"], c["family"], f"{c['severity']:g}", str(c["n_inputs"]),
                     fmt(c["change_rate"])]
                    for c in directional
                ],
            ),
        ]  # fmt: skip
    for attack in report.get("attacks", []):
        out += ["", _render_attack(attack)]
    out += _warnings(report)
    return "\n".join(out)


def _render_attack(attack: JSON) -> str:
    rows = [
        [g["group"], str(g["n_inputs"]), fmt(g["success_rate"]), fmt(g["queries_per_input"]),
         fmt(g["words_changed"])]
        for g in [*attack["by_language"], attack["overall"]]
    ]  # fmt: skip
    flips = [r for r in attack["results"] if r["success"]][:3]
    lines = [
        f"attack perturbations[{attack['perturbation']}]: up to {attack['query_budget']} queries "
        f"per input, severity {attack['severity']:g} (share of words), edits "
        f"{', '.join(attack['edits'])}",
        table(["lang", "n", "success rate", "queries/input", "words changed"], rows),
    ]
    for r in flips:
        changes = ", ".join(f"{e['original']!r} -> {e['edited']!r}" for e in r["edits"])
        lines.append(
            f"  e.g. input {r['input_index']} ({r['lang']}): {changes}: "
            f"{r['clean_prediction']['label']} -> {r['final_prediction']['label']}"
        )
    return "\n".join(lines)


def render_compare(report: JSON) -> str:
    a, b = report["model_a"], report["model_b"]
    out = [
        f"model_a {a['name']}/{a['version']} vs model_b {b['name']}/{b['version']}, "
        f"differences are A - B, seed {report['seed']}, {report['confidence']:.0%} intervals",
        "",
        "clean accuracy per language",
        table(
            ["lang", "n", "A", "B", "A - B", "McNemar p (Holm)"],
            [
                [g["group"], str(g["n_inputs"]), fmt(g["a"]["clean_accuracy"]),
                 fmt(g["b"]["clean_accuracy"]), fmt(g["clean_accuracy_difference"]),
                 _p(g["clean_accuracy_test"]["p_holm"])]
                for g in report["languages"]
            ],
        ),
    ]  # fmt: skip
    cells = report["invariance"]["by_language"] + report["directional"]["by_language"]
    if cells:
        out += [
            "",
            "flip rate per perturbation and language",
            table(
                ["lang", "family", "sev", "n", "A", "B", "A - B", "McNemar p (Holm)"],
                [
                    [c["group"], c["family"], f"{c['severity']:g}", str(c["n_inputs"]),
                     fmt(c["a"]["flip_rate"]), fmt(c["b"]["flip_rate"]),
                     fmt(c["flip_rate_difference"]), _p(c["flip_test"]["p_holm"])]
                    for c in cells
                ],
            ),
        ]  # fmt: skip
    out += _warnings(report)
    return "\n".join(out)


def _warnings(report: JSON) -> list[str]:
    return ["", *(f"warning: {w}" for w in report["warnings"])] if report["warnings"] else []


def _body(args: argparse.Namespace, labels: Sequence[str]) -> JSON:
    return {
        "inputs": read_inputs(
            args.data, labels, limit=args.limit, with_labels=not args.no_labels, ids=args.ids
        ),
        "perturbations": perturbations(args),
        "seed": args.seed,
        "confidence": args.confidence,
    }


def _main(args: argparse.Namespace) -> int:
    stdout, stderr = sys.stdout, sys.stderr
    try:
        with ProbeClient(args.url, args.api_key, args.timeout) as client:
            if args.probe_command == "run":
                body = _body(args, client.labels(args.model))
                if args.job:
                    report = run_job(client, {**body, "model": args.model}, stderr)
                else:
                    report = client.probe(args.model, body)
                text = render_probe(report)
            else:
                body = _body(args, client.labels(args.model_a))
                body.update(model_a=args.model_a, model_b=args.model_b)
                report = run_job(client, body, stderr) if args.job else client.compare(body)
                text = render_compare(report)
    except ClientError as error:
        print(f"polyprobe probe: {error}", file=stderr)
        return 1
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.json else text, file=stdout)
    return 0


def _id_range(spec: str) -> range:
    try:
        return parse_id_range(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `polyprobe probe run|compare` on the top-level subcommands."""
    probe = commands.add_parser(
        "probe",
        help="probe a running server's model (or compare two) for robustness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = probe.add_subparsers(dest="probe_command", required=True, metavar="{run,compare}")
    run = sub.add_parser("run", help="probe one model: POST /v1/models/{model}/probe")
    run.add_argument("model", help="model name on the server")
    compare = sub.add_parser("compare", help="compare two models: POST /v1/probe/compare")
    compare.add_argument("model_a")
    compare.add_argument("model_b")
    for parser in (run, compare):
        parser.add_argument(
            "--data", type=Path, nargs="+", required=True, help="JSONL files of inputs"
        )
        parser.add_argument(
            "--family",
            action="append",
            required=True,
            help="perturbation family (repeat, or comma-separate; 'attack' for the search)",
        )
        parser.add_argument("--severity", type=float, default=0.1, help="0..1 (default 0.1)")
        parser.add_argument("--samples", type=int, default=1, help="samples per input")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--confidence", type=float, default=0.95, help="interval level")
        parser.add_argument("--limit", type=int, help="rows per file (default: all)")
        parser.add_argument(
            "--ids",
            type=_id_range,
            help="only rows whose id is in this inclusive range, e.g. 1500-1999 (held-out ids)",
        )
        parser.add_argument("--no-labels", action="store_true", help="ignore gold labels")
        parser.add_argument("--query-budget", type=int, help="attack: queries per input")
        parser.add_argument("--edits", help="attack: comma list of edit families, in order")
        parser.add_argument("--job", action="store_true", help="run as a job, showing progress")
        parser.add_argument("--json", action="store_true", help="print the response body")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
        parser.add_argument("--api-key", help="bearer API key, when the server requires one")
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
        parser.set_defaults(handler=_main)
