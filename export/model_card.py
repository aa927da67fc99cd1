"""The bundle's human-readable model card (`README.md`), rendered from its manifest."""

from __future__ import annotations

from collections.abc import Sequence

from export.bundle import BundleManifest, Evaluation, LanguageResult, ModelVariant, ParityReport

MODEL_CARD_NAME = "README.md"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}"


def _training(manifest: BundleManifest) -> list[str]:
    p = manifest.provenance
    lines = ["## Training", ""]
    if p.training_run is None:
        lines += [
            f"No training run manifest (`polyprobe_run.json`) was found beside `{p.source}`, so "
            "what this model was trained on is not recorded here; ask whoever produced the "
            "checkpoint.",
            "",
        ]
    rows = [
        ("base model", p.base_model),
        ("recipe", p.recipe),
        ("intermediate tasks", ", ".join(p.intermediate_tasks) or "none (direct fine-tuning)"),
        ("target task", p.target_task),
        ("seeds", ", ".join(map(str, p.seeds))),
        ("code version", p.code_version),
        ("exported from", p.source),
    ]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows if v]
    if p.data_ids:
        lines += ["", "Data ids used (exactly these examples):", ""]
        lines += [f"- {phase}: `{ids}`" for phase, ids in sorted(p.data_ids.items())]
    return [*lines, ""]


def _accuracy_cell(result: LanguageResult) -> str:
    if result.accuracy_ci95 is None:
        return _pct(result.accuracy)
    low, high = result.accuracy_ci95
    return f"{_pct(result.accuracy)} [{_pct(low)}, {_pct(high)}]"


def _versus_majority(result: LanguageResult) -> str:
    """Whether the accuracy interval clears the majority baseline, the least a classifier owes."""
    if result.majority_baseline is None:
        return ""
    if result.accuracy_ci95 is None:
        return "above" if result.accuracy > result.majority_baseline else "not above"
    low, high = result.accuracy_ci95
    if low > result.majority_baseline:
        return "above"
    return "below" if high < result.majority_baseline else "not clearly above"


def _evaluation(evaluations: Sequence[Evaluation]) -> list[str]:
    lines = ["## Results per language", ""]
    if not evaluations:
        return [*lines, "No per-language evaluation was recorded by training.", ""]
    for ev in evaluations:
        lines += [f"**{ev.task}**, {ev.split} (ids {ev.ids})", ""]
        lines += [
            "| language | n | accuracy (%) [95% CI] | macro F1 | majority baseline (%) | "
            "vs majority |",
            "|---|---:|---:|---:|---:|---|",
        ]
        lines += [
            f"| {lang} | {r.n} | {_accuracy_cell(r)} | "
            f"{'' if r.macro_f1 is None else f'{r.macro_f1:.3f}'} | {_pct(r.majority_baseline)} | "
            f"{_versus_majority(r)} |"
            for lang, r in sorted(ev.per_language.items())
        ]
        lines += ["", ev.notes, ""] if ev.notes else [""]
    return lines


def _parity_table(parity: ParityReport) -> list[str]:
    lines = [
        "| language | n | max abs logit diff | argmax agreement | accuracy PyTorch (%) | "
        "accuracy here (%) | change (points) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, r in sorted(parity.per_language.items()):
        delta = r.get("accuracy_delta")
        lines.append(
            f"| {lang} | {int(r['n'])} | {r['max_abs_logit_diff']:.2e} | "
            f"{r['argmax_agreement']:.3f} | {_pct(r.get('accuracy_reference'))} | "
            f"{_pct(r.get('accuracy'))} | {'' if delta is None else f'{delta * 100:+.1f}'} |"
        )
    return lines


def _variant(model: ModelVariant) -> list[str]:
    size = model.size_bytes + sum(f.size_bytes for f in model.external_data)
    lines = [f"### {model.precision}: `{model.path}` ({size / 1e6:.1f} MB)", ""]
    if model.external_data:
        lines += [f"Weights in {', '.join(f'`{f.path}`' for f in model.external_data)}.", ""]
    if model.optimization:
        lines += [f"Made by: {model.optimization}.", ""]
    parity = model.parity
    if parity is None:
        return [*lines, "No parity report.", ""]
    gate = f"max abs logit diff <= {parity.tolerance:g}"
    if parity.min_argmax_agreement is not None:
        gate += f", argmax agreement >= {parity.min_argmax_agreement:g}"
    if parity.max_accuracy_drop is not None:
        gate += f", accuracy drop <= {parity.max_accuracy_drop * 100:g} points per language"
    lines += [
        f"Parity against the {parity.reference} on {parity.n_examples} inputs ({parity.sample}): "
        f"max abs logit diff {parity.max_abs_logit_diff:.2e}, argmax agreement "
        f"{parity.argmax_agreement:.3f}; gate: {gate}; {'passed' if parity.passed else 'FAILED'}.",
        "",
        *_parity_table(parity),
        "",
    ]
    return lines


def render_model_card(manifest: BundleManifest, rejected: Sequence[str] = ()) -> str:
    """Markdown: what the model is, how it was trained and evaluated, its variants, its limits."""
    languages = sorted(
        {lang for ev in manifest.evaluation for lang in ev.per_language}
        | {lang for m in manifest.models if m.parity for lang in m.parity.per_language}
    )
    lines = [
        f"# {manifest.name} (version {manifest.version})",
        "",
        f"A {manifest.task} model: labels in logit order {', '.join(manifest.labels)}; at most "
        f"{manifest.max_sequence_length} tokens per input (longer inputs are truncated). Served by "
        "`polyprobe serve`; `bundle.json` holds every number below in machine-readable form.",
        "",
        *_training(manifest),
        *_evaluation(manifest.evaluation),
        "## Export and parity",
        "",
        f"Exported by {manifest.provenance.exporter}, ONNX opset {manifest.opset}, inputs "
        f"{', '.join(manifest.inputs)}. Each file was compared with the PyTorch checkpoint on the "
        "same token ids before it was written.",
        "",
    ]
    for model in manifest.models:
        lines += _variant(model)
    if rejected:
        lines += ["Left out (failed their parity gate):", ""]
        lines += [f"- {reason}" for reason in rejected]
        lines.append("")
    lines += [
        "## Intended use and limits",
        "",
        f"- Intended for {manifest.task} research and robustness probing in the languages it "
        f"was evaluated in ({', '.join(languages) or 'none recorded'}); accuracy in any other "
        "language is unmeasured.",
        "- Languages other than the training language(s) are zero-shot transfer: expect lower "
        "accuracy there, and check the per-language table before relying on one.",
        "- Quantised and fp16 variants change probabilities slightly; the parity tables above bound "
        "how much on the sample shown, not on every input.",
        "- The fp16 parity was measured with ONNX Runtime on CPU; CUDA kernels round differently, so "
        "re-check on the GPU you deploy to.",
        "- Not for decisions about people; outputs are probabilities from a classifier, not facts.",
        "",
    ]
    return "\n".join(lines)
