"""The passes the workflow's rules run; each reads checkpoints one tensor at a time.

* ``compare_pair`` — sparsity pass: update masks (η rule and absolute tolerance) per tensor,
  a per-tensor table and the bit-packed η masks.
* ``compute_spectra`` — one checkpoint's SVD cache, streamed to a safetensors file.
* ``pair_geometry`` — NSS, principal angles, principal/low-magnitude mask overlaps and update
  rank, from two spectra caches, the pair's masks and the base weights.
* ``cross_run_jaccard`` — pairwise Jaccard of several pairs' masks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch
from safetensors import safe_open

from offprincipal.checkpoints.naming import TensorInfo, classify
from offprincipal.checkpoints.reader import Checkpoint, iter_pairs, pair_names, readahead, release_pages
from offprincipal.device import pick_device
from offprincipal.io import write_table
from offprincipal.parallel import ordered_map, threads_per_worker
from offprincipal.metrics import crossrun
from offprincipal.metrics.masks import MaskFile, low_magnitude_mask, mask_writer, overlaps, principal_mask
from offprincipal.metrics.sparsity import compare_blocks, round_to_bf16
from offprincipal.metrics.spectral import angle_curve, nss, spectrum, update_rank_ratio
from offprincipal.progress import pass_progress
from offprincipal.tensorfile import streaming_safetensors

log = logging.getLogger(__name__)

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def load_manifest(path: str | os.PathLike) -> dict:
    manifest = json.loads(Path(path).read_text())
    ckpt_dir = Path(manifest["path"])
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(
            f"checkpoint '{manifest.get('name')}' (manifest {path}) points to {ckpt_dir}, which does not exist; "
            "delete the manifest to fetch or build it again"
        )
    return manifest


def open_checkpoint(manifest_path: str | os.PathLike) -> Checkpoint:
    manifest = load_manifest(manifest_path)
    return Checkpoint(manifest["path"], label=manifest.get("name"))


def _info_columns(info: TensorInfo) -> dict:
    return {"name": info.name, "layer": info.layer, "kind": info.kind, "proj": info.proj, "expert": info.expert}


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Rows to a table whose layer/expert columns stay integers despite missing values."""
    table = pd.DataFrame(rows)
    for col in ("layer", "expert", "k", "report_k"):
        if col in table:
            table[col] = table[col].astype("Int64")
    return table


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def compare_pair(
    base_manifest: str | os.PathLike,
    ft_manifest: str | os.PathLike,
    *,
    updates_csv: str | os.PathLike,
    masks_npz: str | os.PathLike,
    eta: float = 1e-3,
    abs_tolerance: float = 1e-5,
    cast_to_bf16: bool = True,
    device: str = "auto",
) -> pd.DataFrame:
    dev = pick_device(device)
    rows = []
    with open_checkpoint(base_manifest) as base, open_checkpoint(ft_manifest) as ft, mask_writer(masks_npz) as masks:
        plan = pair_names(base, ft)
        total = sum(_stored_bytes(base, b) + _stored_bytes(ft, f) for _, b, f in plan)
        with pass_progress(f"sparsity {base.label} → {ft.label}", tensors=len(plan), total_bytes=total) as progress:
            # stored dtypes here; compare_blocks rounds to bf16 block by block
            for tp in iter_pairs(base, ft, dtype=None, device=dev):
                bits, counts = compare_blocks(tp.base, tp.ft, eta=eta, atol=abs_tolerance, cast_to_bf16=cast_to_bf16)
                masks.add_packed(tp.name, bits, tuple(tp.base.shape))
                nbytes = tp.base.numel() * tp.base.element_size() + tp.ft.numel() * tp.ft.element_size()
                release_pages(tp.base, tp.ft)  # RSS stays one pair, not the whole model
                rows.append(
                    {
                        **_info_columns(tp.info),
                        "shape": _shape_str(tp.base.shape),
                        "numel": tp.base.numel(),
                        "base_dtype": str(tp.base_dtype).removeprefix("torch."),
                        "ft_dtype": str(tp.ft_dtype).removeprefix("torch."),
                        "changed_eta": counts.changed_eta,
                        "changed_abs": counts.changed_abs,
                        "note": tp.note,
                        "nonfinite_base": counts.nonfinite_base,
                        "nonfinite_ft": counts.nonfinite_ft,
                    }
                )
                if counts.nonfinite_base or counts.nonfinite_ft:
                    log.warning(
                        "tensor %s holds %d inf/NaN entries in base %s and %d in %s; they count as changed"
                        " only where the codes differ",
                        tp.name, counts.nonfinite_base, base.label, counts.nonfinite_ft, ft.label,
                    )
                progress.advance(nbytes)
        table = _frame(rows)
        if table.empty:
            raise ValueError(f"pair {base.label} → {ft.label} has no tensors in common")
        write_table(table, updates_csv)
    return table


def _stored_bytes(ckpt: Checkpoint, name: str) -> int:
    """Bytes ``name`` occupies on disk (its slice, for a fused MoE expert)."""
    return ckpt.byte_span(name)[2]


def matrix_names(ckpt: Checkpoint, kinds: Iterable[str]) -> list[str]:
    kinds = set(kinds)
    return [n for n in ckpt.names() if ckpt.info(n).kind in kinds and len(ckpt.shape(n)) == 2]


#: spectra metadata key: JSON ``{matrix name: reason}`` of the matrices whose SVD was skipped
FLAGGED_KEY = "flagged"
_REASON_CHARS = 160  # a flag's reason is cut to this length (the header reserves room for all)


def nonfinite_problem(w: torch.Tensor) -> str | None:
    """``"N inf, M NaN entries"`` when ``w`` holds non-finite values, else None."""
    finite = torch.isfinite(w)
    if bool(finite.all()):
        return None
    nan = int(torch.isnan(w).sum())
    return f"{int((~finite).sum()) - nan} inf, {nan} NaN entries"


def compute_spectra(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    kinds: Sequence[str],
    top_k: int,
    svd_dtype: str = "float64",
    cast_to_bf16: bool = True,
    device: str = "auto",
) -> dict[str, str]:
    """With ``cast_to_bf16`` the SVD is of the bf16-rounded weights, the same values the
    update probe compares (an fp32-stored checkpoint would otherwise carry rounding noise
    of ~1e-3 relative into NSS, far above RL's ~1e-5).

    A matrix holding inf/NaN (or one LAPACK cannot factor) does not stop the pass: its S, U
    and V are written as NaN, the file's metadata ``flagged`` maps its name to the reason, a
    warning names it, and the other matrices are computed. Returns the flagged matrices."""
    dtype = _DTYPES[svd_dtype]
    dev = pick_device(device)
    flagged: dict[str, str] = {}
    with open_checkpoint(manifest) as ckpt:
        names = matrix_names(ckpt, kinds)
        if not names:
            raise ValueError(f"checkpoint {ckpt.label}: no 2-D weights of kinds {sorted(kinds)}")
        specs = []
        for n in names:
            m, k = ckpt.shape(n)
            r = min(m, k)
            kk = min(top_k, r)
            specs += [(f"{n}::S", dtype, (r,)), (f"{n}::U", dtype, (m, kk)), (f"{n}::V", dtype, (k, kk))]
        meta = {"checkpoint": ckpt.label, "top_k": str(top_k), "svd_dtype": svd_dtype,
                "cast_to_bf16": str(cast_to_bf16), "device": dev.type, FLAGGED_KEY: "{}"}
        reserve = sum(len(json.dumps(n)) + _REASON_CHARS + 8 for n in names)  # room to flag every matrix
        total = sum(_stored_bytes(ckpt, n) for n in names)
        with (
            streaming_safetensors(out, specs, meta, metadata_reserve=reserve) as writer,
            pass_progress(f"spectra {ckpt.label}", tensors=len(names), total_bytes=total) as progress,
            readahead() as ask,
        ):
            for i, n in enumerate(names):
                if i + 1 < len(names):
                    ask((ckpt, names[i + 1]))
                w = ckpt.load(n, device=dev)
                x = round_to_bf16(w) if cast_to_bf16 else w
                problem = nonfinite_problem(x)
                sp = None
                if problem is None:
                    try:
                        sp = spectrum(x, top_k, dtype=dtype)
                    except torch.linalg.LinAlgError as err:
                        problem = f"SVD failed: {err}"
                nbytes = w.numel() * w.element_size()
                release_pages(w)
                if problem is not None:
                    problem = problem[:_REASON_CHARS]
                    flagged[n] = problem
                    log.warning("checkpoint %s: matrix %s skipped in the spectral pass (%s)", ckpt.label, n, problem)
                    writer.metadata[FLAGGED_KEY] = json.dumps(flagged, sort_keys=True)
                for part, (_, part_dtype, shape) in zip("SUV", specs[3 * i : 3 * i + 3]):
                    value = getattr(sp, part) if sp is not None else torch.full(shape, float("nan"), dtype=part_dtype)
                    writer.write(f"{n}::{part}", value)
                progress.advance(nbytes)
    return flagged


class SpectraFile:
    """Reader of a ``compute_spectra`` output: ``names`` and ``get(name) -> (S, U, V)``."""

    def __init__(self, path: str | os.PathLike, device: torch.device | str = "cpu"):
        self.path = Path(path)
        self._f = safe_open(str(self.path), framework="pt", device=str(device))
        self.names = sorted({k.rsplit("::", 1)[0] for k in self._f.keys()})
        self.metadata = self._f.metadata() or {}
        #: matrices whose SVD was skipped (inf/NaN, or LAPACK failed): name -> reason
        self.flagged: dict[str, str] = json.loads(self.metadata.get(FLAGGED_KEY, "{}"))

    def __contains__(self, name: str) -> bool:
        return f"{name}::S" in self._f.keys()

    def found_finite(self, name: str, cast_to_bf16: bool) -> bool:
        """True if the spectral pass checked these very values (stored, or bf16-rounded as
        ``cast_to_bf16`` says) and found them finite: it factored ``name`` without a flag."""
        return name in self and name not in self.flagged and self.metadata.get("cast_to_bf16") == str(cast_to_bf16)

    def get(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        try:
            return tuple(self._f.get_tensor(f"{name}::{part}") for part in "SUV")
        except Exception as err:  # safetensors raises its own error types
            raise KeyError(f"{self.path}: no spectrum for tensor {name!r}") from err


def pair_geometry(
    base_manifest: str | os.PathLike,
    ft_manifest: str | os.PathLike,
    base_spectra: str | os.PathLike,
    ft_spectra: str | os.PathLike,
    masks_npz: str | os.PathLike,
    *,
    geometry_csv: str | os.PathLike,
    angles_csv: str | os.PathLike,
    angle_ks: Sequence[int],
    report_k: int,
    principal_rank_k: int,
    mask_alpha: float,
    update_rank: bool = True,
    cast_to_bf16: bool = True,
    device: str = "auto",
) -> pd.DataFrame:
    """Per matrix: NSS, principal angles, mask overlaps, update rank. A matrix whose spectrum
    was skipped on either side (``SpectraFile.flagged``: inf/NaN, failed SVD), or whose
    update rank cannot be computed, keeps its row with the metrics it has, NaN for the rest,
    and the reason in column ``flag``; it adds no angle rows."""
    dev = pick_device(device)
    rows, angle_rows = [], []
    s0_file, s1_file = SpectraFile(base_spectra, dev), SpectraFile(ft_spectra, dev)
    with open_checkpoint(base_manifest) as base, open_checkpoint(ft_manifest) as ft, MaskFile(masks_npz) as masks:
        plan = [(name, bn, fn) for name, bn, fn in pair_names(base, ft) if bn in s0_file and fn in s1_file]
        if not plan:
            raise ValueError(f"pair {base.label} → {ft.label}: no matrices with spectra on both sides")
        total = sum(_stored_bytes(base, b) + (_stored_bytes(ft, f) if update_rank else 0) for _, b, f in plan)
        workers, threads_each = _matrix_workers(dev)
        with (
            pass_progress(f"geometry {base.label} → {ft.label}", tensors=len(plan), total_bytes=total) as progress,
            readahead() as ask,
            threads_per_worker(threads_each),
        ):

            def one_matrix(i: int):
                if i + workers < len(plan):  # the matrix a worker takes up next
                    _, next_base, next_ft = plan[i + workers]
                    ask((base, next_base), *([(ft, next_ft)] if update_rank else []))
                name, base_name, ft_name = plan[i]
                return _matrix_geometry(
                    name, base, ft, base_name, ft_name, s0_file, s1_file, masks,
                    angle_ks=angle_ks, report_k=report_k, principal_rank_k=principal_rank_k,
                    mask_alpha=mask_alpha, update_rank=update_rank, cast_to_bf16=cast_to_bf16, dev=dev,
                )

            for row, angles, nbytes in ordered_map(one_matrix, range(len(plan)), workers):
                rows.append(row)
                angle_rows += angles
                progress.advance(nbytes)
    table = _frame(rows)
    write_table(table, geometry_csv)
    angles_table = _frame(angle_rows)
    if angles_table.empty:  # every matrix flagged: keep the header so readers see the columns
        angles_table = pd.DataFrame(columns=[*_info_columns(classify("")), "side", "k", "max_angle_deg", "mean_angle_deg", "gap"])
    write_table(angles_table, angles_csv)
    return table


#: matrices in flight at once in the geometry pass on the CPU (each holds a few copies of one
#: matrix: ~0.5 GB for a 1.5B MLP matrix, ~1.5 GB for an 8B one)
_MAX_MATRIX_WORKERS = 4


def _matrix_workers(dev: torch.device) -> tuple[int, int]:
    """(matrices computed side by side, threads each) for the geometry pass. Its steps are
    short and many are single-threaded (selection, counting, casts) or scale poorly (SVDs
    of 128 columns), so on the CPU one matrix per thread keeps the cores busy: on 2 cores
    a 1.5B pair's pass takes ~30% less time than one matrix at a time on 2 threads. One
    matrix at a time on a GPU."""
    threads = torch.get_num_threads()
    if dev.type != "cpu" or threads < 2:
        return 1, threads
    workers = min(threads, _MAX_MATRIX_WORKERS)
    return workers, threads // workers


def _matrix_geometry(name, base, ft, base_name, ft_name, s0_file, s1_file, masks, *, angle_ks, report_k,
                     principal_rank_k, mask_alpha, update_rank, cast_to_bf16, dev) -> tuple[dict, list[dict], int]:
    """One matrix's geometry row, its angle-curve rows and the bytes it read."""
    info = classify(name)
    w0_stored = base.load(base_name, device=dev)
    w0 = round_to_bf16(w0_stored) if cast_to_bf16 else w0_stored
    nbytes = w0_stored.numel() * w0_stored.element_size()
    updated = torch.from_numpy(masks.mask(name)).to(dev)
    row = {
        **_info_columns(info),
        "shape": _shape_str(w0.shape),
        "numel": w0.numel(),
        "update_density": int(torch.count_nonzero(updated)) / updated.numel(),
        **{col: float("nan") for col in _GEOMETRY_METRICS},
        "report_k": pd.NA,
    }
    problems = [f"base spectrum skipped: {s0_file.flagged[base_name]}"] if base_name in s0_file.flagged else []
    if ft_name in s1_file.flagged:
        problems.append(f"fine-tuned spectrum skipped: {s1_file.flagged[ft_name]}")
    angle_rows: list[dict] = []
    if not problems:
        S0, U0, V0 = s0_file.get(base_name)
        S1, U1, V1 = s1_file.get(ft_name)
        princ = principal_mask(U0, S0, V0, k=principal_rank_k, alpha=mask_alpha)
        low = low_magnitude_mask(w0, alpha=mask_alpha)
        row["nss"] = nss(S0, S1)
        row.update(overlaps({"princ": princ, "low": low, "princ_not_low": princ & ~low}, updated))
        for side, a, b in (("U", U0, U1), ("V", V0, V1)):
            curve = angle_curve(a, b, angle_ks, S0, orthonormal=True)  # singular vectors
            angle_rows += [{**_info_columns(info), "side": side, **r} for r in curve]
            at_report = [r for r in curve if r["k"] <= report_k]
            last = at_report[-1] if at_report else {"k": pd.NA, "max_angle_deg": float("nan"), "gap": float("nan")}
            row[f"max_angle_{side}_deg"] = last["max_angle_deg"]
            row["report_k"] = last["k"]
            row["gap_report_k"] = last["gap"]
    if update_rank:
        w1_stored = ft.load(ft_name, device=dev)
        nbytes += w1_stored.numel() * w1_stored.element_size()
        w1 = round_to_bf16(w1_stored) if cast_to_bf16 else w1_stored
        sides = (("base", w0, s0_file, base_name), ("fine-tuned", w1, s1_file, ft_name))
        bad = [f"{side} weights hold {p}" for side, w, spectra, n in sides
               if not spectra.found_finite(n, cast_to_bf16) and (p := nonfinite_problem(w))]
        if bad:
            problems.append("update rank skipped: " + "; ".join(bad))
        else:
            try:
                row["update_rank_ratio"] = update_rank_ratio(w0, w1)
            except torch.linalg.LinAlgError as err:
                problems.append(f"update rank skipped: SVD of the update failed: {err}")
        release_pages(w1_stored)
    else:
        row.pop("update_rank_ratio")
    release_pages(w0_stored)
    row["flag"] = "; ".join(dict.fromkeys(problems))
    if problems:
        log.warning("pair %s → %s: matrix %s flagged (%s)", base.label, ft.label, name, row["flag"])
    return row, angle_rows, nbytes


#: geometry.csv metric columns, NaN where a flagged matrix has no value
_GEOMETRY_METRICS = (
    "nss",
    "overlap_princ", "density_princ", "overlap_low", "density_low", "overlap_princ_not_low", "density_princ_not_low",
    "max_angle_U_deg", "max_angle_V_deg", "gap_report_k", "update_rank_ratio",
)  # fmt: skip


def cross_run_jaccard(
    masks: Mapping[str, str | os.PathLike],
    out_csv: str | os.PathLike,
    *,
    layer: int | None = None,
    kinds: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Pairwise Jaccard of the update masks of several pairs (runs from one base), over the
    tensors they share, optionally restricted to one decoder block and some module kinds."""
    files = {run: MaskFile(path) for run, path in masks.items()}
    try:
        common = set.intersection(*(set(f.names) for f in files.values()))
        names = sorted(
            n
            for n in common
            if (layer is None or classify(n).layer == layer) and (kinds is None or classify(n).kind in kinds)
        )
        if not names:
            raise ValueError(f"no tensors shared by runs {sorted(files)} in layer {layer} of kinds {kinds}")
        table = crossrun.jaccard_table(files, names)
        table["layer"] = layer
        write_table(table, out_csv)
        return table
    finally:
        for f in files.values():
            f.close()
