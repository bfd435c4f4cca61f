"""Figures (seaborn on matplotlib's Agg backend), each saved as PNG and PDF.

Per backbone: score against trainable parameters (log x) per task; grouped bars with seed error
bars (±1 sample std); every seed as a point; training curves (selection metric against step).
For one trained run (``python -m bench plot prompts RUN``): the cosine similarity between its
prompt vectors.

Files are reproducible: no timestamp (``CreationDate``/``Software`` metadata removed), no
random jitter, and error bars are standard deviations, never bootstrapped.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UserError, closest
from bench.report import collect

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

#: (file stem, title) of the per-backbone figures, in index order.
FIGURES = (
    ("score_vs_params", "score vs trainable parameters"),
    ("bars", "mean score per task (error bars: ±1 std over seeds)"),
    ("seeds", "every seed"),
    ("curves", "training curves (selection metric vs step)"),
)


def _pyplot():
    """pyplot on the Agg backend (no display needed) and seaborn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def _style():
    """A fixed seaborn style for the figures, scoped to them (the process's rcParams stay as
    they were)."""
    plt, sns = _pyplot()
    return plt.rc_context({**sns.axes_style("whitegrid"), **sns.plotting_context("paper")})


def save(fig: Figure, stem: Path) -> list[Path]:
    """``stem.png`` and ``stem.pdf`` without timestamps; closes the figure."""
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    fig.savefig(png, dpi=120, metadata={"Software": None}, bbox_inches="tight")
    fig.savefig(pdf, metadata={"CreationDate": None}, bbox_inches="tight")
    plt.close(fig)
    return [png, pdf]


def _grid(plt: Any, panels: int, width: float = 3.4, height: float = 2.8):
    columns = min(4, max(1, panels))
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def _palette(sns: Any, rows: list[str]) -> dict[str, Any]:
    colors = sns.color_palette("tab10", n_colors=max(len(rows), 1))
    return {row: colors[i % len(colors)] for i, row in enumerate(rows)}


def _finish(fig: Figure, axes: list, rows: list[str], title: str, ylabel: str) -> None:
    """Y label on the first column only, a title above the panels and one legend to their
    right, in table row order."""
    columns = axes[0].get_gridspec().ncols if axes else 1
    for i, ax in enumerate(axes):
        ax.set_ylabel(ylabel if i % columns == 0 else "")
    fig.tight_layout()
    fig.suptitle(title, y=1.02)
    _legend(fig, axes, rows)


def _legend(fig: Figure, axes: list, rows: list[str]) -> None:
    """One legend for the figure (right of the panels), in table row order."""
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    labels = [r for r in rows if r in handles]
    if labels:
        fig.legend(
            [handles[r] for r in labels],
            labels,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )


def backbone_figures(frame: pd.DataFrame, records: Any, backbone: str, folder: Path) -> list[Path]:
    """The four figures of ``backbone`` under ``folder``; none when it has no ok run."""
    ok = frame[(frame["backbone"] == backbone) & (frame["status"] == collect.STATUS_OK)]
    ok = ok[ok["score"].notna()]
    if ok.empty:
        return []
    plt, sns = _pyplot()
    rows = collect.ordered_rows(ok)
    tasks = collect.ordered_tasks(ok)
    palette = _palette(sns, rows)
    curves = curve_frame(ok, records)
    written = []
    with _style():
        written += _score_vs_params(plt, ok, rows, tasks, palette, backbone, folder)
        written += _bars(plt, sns, ok, rows, tasks, palette, backbone, folder)
        written += _seeds(plt, sns, ok, rows, tasks, palette, backbone, folder)
        written += _curves(plt, sns, curves, rows, tasks, palette, backbone, folder)
    return written


def _ylabel(ok: pd.DataFrame) -> str:
    splits = sorted(set(ok["split"]))
    return f"score on {'/'.join(splits)} (×100)"


def _score_vs_params(plt, ok, rows, tasks, palette, backbone, folder) -> list[Path]:
    fig, axes = _grid(plt, len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        for row in rows:
            mine = ok[(ok["task"] == task) & (ok["row"] == row)]
            params = [float(p) for p in mine["trainable"] if p == p and p is not None]
            if mine.empty or not params:
                continue
            std = float(mine["score"].std(ddof=1)) if len(mine) > 1 else 0.0
            ax.errorbar(
                sum(params) / len(params),
                float(mine["score"].mean()),
                yerr=std,
                fmt="o",
                color=palette[row],
                capsize=3,
                label=row,
            )
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("trainable parameters (log)")
    title = f"{backbone}: score vs trainable parameters (mean ± std over seeds)"
    _finish(fig, axes, rows, title, _ylabel(ok))
    return save(fig, folder / "score_vs_params")


def _bars(plt, sns, ok, rows, tasks, palette, backbone, folder) -> list[Path]:
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(tasks) * max(1, len(rows)) / 2), 3.2))
    sns.barplot(
        data=ok,
        x="task",
        y="score",
        hue="row",
        order=tasks,
        hue_order=rows,
        palette=palette,
        errorbar="sd",
        capsize=0.1,
        ax=ax,
    )
    _finish(fig, [ax], rows, f"{backbone}: mean over seeds, error bars ±1 sample std", _ylabel(ok))
    return save(fig, folder / "bars")


def _seeds(plt, sns, ok, rows, tasks, palette, backbone, folder) -> list[Path]:
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(tasks) * max(1, len(rows)) / 2), 3.2))
    sns.stripplot(
        data=ok,
        x="task",
        y="score",
        hue="row",
        order=tasks,
        hue_order=rows,
        palette=palette,
        dodge=True,
        jitter=False,
        size=5,
        ax=ax,
    )
    _finish(fig, [ax], rows, f"{backbone}: one point per seed", _ylabel(ok))
    return save(fig, folder / "seeds")


def curve_frame(ok: pd.DataFrame, records: Any) -> pd.DataFrame:
    """(task, row, seed, step, score) of every ok run's selection curve, primary metric ×100."""
    import pandas as pd

    by_key = {str(r["key"]): r for r in records}
    points = []
    for key, task, row, seed, metric in zip(
        ok["key"], ok["task"], ok["row"], ok["seed"], ok["metric"], strict=True
    ):
        for point in by_key[key].get("curve") or []:
            value = (point.get("selection") or {}).get(metric)
            if isinstance(value, int | float) and math.isfinite(value) and "step" in point:
                points.append((task, row, int(seed), int(point["step"]), 100.0 * value))
    return pd.DataFrame(points, columns=["task", "row", "seed", "step", "score"])


def _curves(plt, sns, curves, rows, tasks, palette, backbone, folder) -> list[Path]:
    if curves.empty:
        return []
    shown = [t for t in tasks if t in set(curves["task"])]
    fig, axes = _grid(plt, len(shown))
    for ax, task in zip(axes, shown, strict=True):
        mine = curves[curves["task"] == task]
        sns.lineplot(
            data=mine,
            x="step",
            y="score",
            hue="row",
            hue_order=rows,
            palette=palette,
            estimator="mean",
            errorbar="sd",
            marker="o",
            ax=ax,
        )
        ax.set_title(task)
    title = f"{backbone}: selection metric during training (mean ± std over seeds)"
    _finish(fig, axes, rows, title, "selection score (×100)")
    return save(fig, folder / "curves")


# --- prompt heatmap ------------------------------------------------------------------------------


def find_run(results: Path, run: str) -> dict[str, Any]:
    """The record of ``run``: a full key or a unique key prefix (UserError otherwise)."""
    runs = Path(results) / "runs"
    keys = sorted(p.stem for p in runs.glob("*.json")) if runs.is_dir() else []
    if not keys:
        raise UserError(f"no run records in {runs}; run `python -m bench run` first")
    matches = [k for k in keys if k == run] or [k for k in keys if k.startswith(run)]
    if not matches:
        hint = closest(run, keys)
        shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
        did_you_mean = f" Did you mean '{hint}'?" if hint else ""
        raise UserError(f"unknown run '{run}' in {runs}.{did_you_mean} Runs: {shown}")
    if len(matches) > 1:
        raise UserError(
            f"run prefix '{run}' matches {len(matches)} runs ({', '.join(matches[:10])}); "
            "give more characters of the key"
        )
    path = runs / f"{matches[0]}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the record {path}: {error}") from None


def prompt_tensor(tensors: dict[str, Any], record: dict[str, Any]) -> np.ndarray:
    """The run's prompt as a float array ``[m, width]``: ``prompt`` (peft-bench's methods) or
    peft's ``*prompt_embeddings`` (its comparison rows)."""
    names = (
        ["prompt"]
        if "prompt" in tensors
        else sorted(k for k in tensors if k.endswith("prompt_embeddings"))
    )
    if not names:
        raise UserError(
            f"run {record['key']} ({record['method']}) stored no prompt in its delta (tensors: "
            f"{', '.join(sorted(tensors)) or 'none'}); prompt heatmaps need a prompt method: "
            "prompt_tuning, p_tuning, p_tuning_v2, prefix_tuning or a peft_* row"
        )
    array = tensors[names[0]].detach().float().cpu().numpy()
    return array.reshape(array.shape[0], -1)


def _layers(record: dict[str, Any], width: int) -> tuple[int, str]:
    """(number of layers, placement) of a deep prompt; (1, placement) when it cannot be told,
    in which case each position's whole vector (all layers) is compared."""
    placement = str((record.get("method_info") or {}).get("placement") or "input")
    if placement not in ("hidden", "kv"):
        return 1, placement
    try:
        from transformers import AutoConfig

        from bench.backbones import resolve_backbone
        from methods._prompting import geometry

        ref = resolve_backbone(str(record["backbone"]))
        geo = geometry(AutoConfig.from_pretrained(ref.location, local_files_only=True))
    except Exception:  # no config at hand (offline Hub id, moved directory): no layer split
        return 1, placement
    per_layer = geo.hidden if placement == "hidden" else 2 * geo.kv_dim
    if width != geo.layers * per_layer:
        return 1, placement
    return geo.layers, placement


def cosine_matrices(prompt: np.ndarray, layers: int) -> list[tuple[str, np.ndarray]]:
    """Cosine similarity between prompt positions: one ``[m, m]`` matrix per view. A deep
    prompt ``[m, L·w]`` is split per layer (``w`` = d for ``hidden``, key and value together for
    ``kv``); the views are the mean over layers, the first layer and the last layer."""
    import numpy as np

    m = prompt.shape[0]
    per_layer = prompt.reshape(m, layers, -1).transpose(1, 0, 2)  # [L, m, w]
    norms = np.linalg.norm(per_layer, axis=-1, keepdims=True)
    unit = per_layer / np.where(norms == 0, 1.0, norms)
    sims = unit @ unit.transpose(0, 2, 1)  # [L, m, m]
    if layers == 1:
        return [("all dimensions", sims[0])]
    return [
        (f"mean over {layers} layers", sims.mean(axis=0)),
        ("layer 1", sims[0]),
        (f"layer {layers}", sims[-1]),
    ]


def prompt_heatmap(results: Path, run: str, out: Path) -> list[Path]:
    """Cosine-similarity heatmap(s) of run ``run``'s prompt vectors, saved under
    ``out/figures/prompts/<key>.{png,pdf}``."""
    from bench import records as record_files
    from bench.weights import read_delta

    record = find_run(results, run)
    key = str(record["key"])
    delta = record_files.delta_path(Path(results), key)
    if not delta.is_file():
        raise UserError(
            f"run {key} has no saved delta ({delta} is absent); rerun it with "
            "`python -m bench run ... --save-delta`"
        )
    tensors, _ = read_delta(delta)
    prompt = prompt_tensor(tensors, record)
    layers, placement = _layers(record, prompt.shape[1])
    views = cosine_matrices(prompt, layers)
    how = (
        "per layer, key and value together"
        if placement == "kv" and layers > 1
        else "per layer"
        if layers > 1
        else f"{placement} placement, whole vector per position"
    )
    title = (
        f"{record['method']} on {record['task']}, seed {record['seed']}, backbone "
        f"{record['backbone']}, run {key}\ncosine similarity of the {prompt.shape[0]} prompt "
        f"vectors ({how})"
    )
    with _style():
        return save(_heatmaps(views, title), Path(out) / "figures" / "prompts" / key)


def _heatmaps(views: list[tuple[str, np.ndarray]], title: str) -> Figure:
    """One heatmap per view, side by side, on a shared -1..1 colour scale."""
    plt, sns = _pyplot()
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 3.8), squeeze=False)
    for i, (ax, (name, matrix)) in enumerate(zip(axes[0], views, strict=True)):
        with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method being deprecated
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(
                matrix,
                vmin=-1,
                vmax=1,
                center=0,
                cmap="vlag",
                square=True,
                ax=ax,
                cbar_kws={"shrink": 0.8},
            )
        ax.set_title(name)
        ax.set_xlabel("prompt position")
        ax.set_ylabel("prompt position" if i == 0 else "")
    fig.tight_layout()
    fig.suptitle(title, y=1.08)
    return fig
