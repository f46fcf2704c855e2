"""Model store: finds models by manifest, checks them, and shares one ONNX Runtime session per model version.

Layout: ``<models_dir>/<model-name>/manifest.json`` + the ONNX file it names
(``model.onnx``).  Directories are given in increasing precedence: the bundled
``pipelines/models`` first, then the configured ``models.dir`` whose models
override bundled ones of the same name.

Sessions are created lazily on :meth:`ModelStore.acquire` (or eagerly by
:meth:`ModelStore.warmup`), keyed by (name, version, sha256), after the file's
sha256 and its declared inputs/outputs have been checked against the manifest.
A :class:`ModelHandle` holds its own session reference: a job that acquired a
handle keeps running on that version after :meth:`ModelStore.reload` installs a
new one, and the next :meth:`acquire` gets the new version.

Every failure a pipeline can meet is a :class:`ModelError` whose message names
the model and the fix; other models are unaffected.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from pipelines.base import ModelInfo

from .manifest import ManifestError, ModelManifest, TensorSpec, sha256_file
from .providers import describe_chain, provider_chain, session_options, short_provider_name
from .settings import ModelsSection

__all__ = ["ModelError", "ModelHandle", "ModelStore", "bundled_models_dir"]

log = logging.getLogger("cardionode.models")

MANIFEST_NAME = "manifest.json"


class ModelError(RuntimeError):
    """A model is missing, corrupt, or does not match its manifest or its inputs (message names model and fix)."""

    def __init__(self, model: str, message: str) -> None:
        super().__init__(f"model {model!r}: {message}")
        self.model = model


def bundled_models_dir() -> Path | None:
    """``pipelines/models`` as installed (package data), or None when no models are bundled."""
    try:
        res = importlib.resources.files("pipelines").joinpath("models")
    except (ModuleNotFoundError, TypeError):
        return None
    candidates: list[Path] = []
    if isinstance(res, Path):
        candidates.append(res)
    else:  # namespace package: a MultiplexedPath over several roots
        import pipelines

        candidates.extend(Path(p) / "models" for p in pipelines.__path__)
    for cand in candidates:
        if cand.is_dir():
            return cand
    return None


# --------------------------------------------------------------------------- internal records


@dataclasses.dataclass
class _Entry:
    """What a scan found for one model name: its manifest (or why it is unusable)."""

    name: str
    directory: Path
    manifest: ModelManifest | None
    error: str | None = None
    fix: str = ""

    @property
    def key(self) -> tuple[str, str, str] | None:
        if self.manifest is None:
            return None
        return (self.manifest.name, self.manifest.version, self.manifest.sha256)

    @property
    def onnx_path(self) -> Path:
        return self.directory / (self.manifest.file if self.manifest else "model.onnx")


@dataclasses.dataclass
class _Loaded:
    session: ort.InferenceSession
    provider: str
    path: Path
    stat: tuple[int, int]  # (size, mtime_ns) of the file that was hashed


# --------------------------------------------------------------------------- handle


class ModelHandle:
    """One loaded model version; thread-safe to :meth:`run` from several jobs at once."""

    def __init__(self, manifest: ModelManifest, session: ort.InferenceSession, provider: str, path: Path) -> None:
        self.manifest = manifest
        self.session = session
        self.provider = provider
        self.path = path
        self._output_names = [o.name for o in manifest.outputs]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def info(self) -> ModelInfo:
        """Name, version, provenance summary and provider in use, for job state and result datasets."""
        return ModelInfo(
            name=self.manifest.name,
            version=self.manifest.version,
            provenance=self.manifest.provenance.summary(),
            provider=short_provider_name(self.provider),
        )

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, version={self.version!r}, provider={self.provider!r})"

    def _error(self, message: str) -> ModelError:
        return ModelError(self.name, f"(version {self.version}) {message}")

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Names, dtypes, ranks and fixed dimensions against the manifest; named axes consistent across inputs."""
        expected = {s.name: s for s in self.manifest.inputs}
        missing = sorted(set(expected) - set(inputs))
        extra = sorted(set(inputs) - set(expected))
        if missing or extra:
            raise self._error(
                f"inputs {sorted(inputs)} do not match the manifest's {sorted(expected)}"
                f" (missing: {missing or 'none'}, unexpected: {extra or 'none'}) — fix the pipeline's feed names"
            )
        axes: dict[str, tuple[int, str]] = {}
        feeds: dict[str, np.ndarray] = {}
        for name, spec in expected.items():
            arr = np.asarray(inputs[name])
            if arr.dtype != np.dtype(spec.dtype):
                raise self._error(f"input {name!r} has dtype {arr.dtype}, the model expects {spec.dtype}"
                                  " — convert it in the pipeline's preprocessing")
            if arr.ndim != len(spec.shape) or any(
                isinstance(d, int) and d != n for d, n in zip(spec.shape, arr.shape)
            ):
                raise self._error(
                    f"input {name!r} has shape {tuple(arr.shape)}, the model expects {_fmt_shape(spec)}"
                    f" — the pipeline's preprocessing ({_fmt_pre(self.manifest.preprocessing)}) does not match"
                    " this model; fix the preprocessing or install a model exported for this input size"
                )
            for d, n in zip(spec.shape, arr.shape):
                if isinstance(d, str):
                    if d in axes and axes[d][0] != n:
                        raise self._error(f"axis {d!r} is {axes[d][0]} in input {axes[d][1]!r} but {n} in {name!r}")
                    axes[d] = (n, name)
            feeds[name] = np.ascontiguousarray(arr)
        return feeds

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``inputs`` against the manifest and run the model; returns output name -> array."""
        feeds = self.check_inputs(inputs)
        try:
            outs = self.session.run(self._output_names, feeds)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidArgument, RuntimeException)
            raise self._error(f"ONNX Runtime failed on {self.path}: {exc}") from exc
        return dict(zip(self._output_names, outs))

    def max_batch(self) -> int | None:
        """Largest batch (axis 0) that the model accepts in one run: fixed dim, TensorRT profile max, or None (any)."""
        limits = []
        for spec in self.manifest.inputs:
            d0 = spec.shape[0] if spec.shape else None
            if isinstance(d0, int):
                limits.append(d0)
            elif spec.name in self.manifest.trt_profile:
                limits.append(self.manifest.trt_profile[spec.name].max[0])
        return min(limits) if limits else None

    def run_batched(self, inputs: Mapping[str, np.ndarray], batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Run many items stacked on axis 0 in chunks of ``batch_size`` (default: the model's max batch).

        All inputs must have the same length on axis 0; outputs are concatenated
        on axis 0.  A model with a fixed batch dimension B gets chunks of B, the
        last one padded with zeros and the padding dropped from the outputs.
        """
        lengths = {np.asarray(v).shape[0] for v in inputs.values()}
        if len(lengths) != 1:
            raise self._error(f"run_batched needs the same axis-0 length for every input, got {sorted(lengths)}")
        total = lengths.pop()
        limit = self.max_batch()
        fixed = any(isinstance(s.shape[0], int) for s in self.manifest.inputs)
        size = limit if fixed else min(x for x in (batch_size, limit, total) if x)
        size = max(1, size or 1)
        results: dict[str, list[np.ndarray]] = {n: [] for n in self._output_names}
        for start in range(0, total, size):
            chunk = {k: np.asarray(v)[start:start + size] for k, v in inputs.items()}
            n = next(iter(chunk.values())).shape[0]
            if fixed and n < size:
                chunk = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in chunk.items()}
            out = self.run(chunk)
            for k, v in out.items():
                results[k].append(v[:n])
        return {k: np.concatenate(v, axis=0) for k, v in results.items()}

    def warmup(self) -> float:
        """One run on zeros at the TensorRT 'opt' shape (dynamic axes = 1 otherwise); returns seconds."""
        feeds = {}
        for spec in self.manifest.inputs:
            prof = self.manifest.trt_profile.get(spec.name)
            shape = prof.opt if prof else tuple(d if isinstance(d, int) else 1 for d in spec.shape)
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
        t0 = time.perf_counter()
        self.run(feeds)
        return time.perf_counter() - t0


def _fmt_shape(spec: TensorSpec) -> str:
    return "(" + ", ".join(str(d) for d in spec.shape) + ")"


def _fmt_pre(pre: Mapping[str, Any]) -> str:
    keys = [k for k in ("frames", "size", "spacing", "window", "channels") if k in pre]
    return ", ".join(f"{k}={pre[k]}" for k in keys) or "see manifest"


# --------------------------------------------------------------------------- store


class ModelStore:
    """All models the node can use; one shared session per (name, version, sha256). Thread-safe."""

    def __init__(self, model_dirs: Sequence[str | Path], settings: ModelsSection, *,
                 available_providers: Sequence[str] | None = None) -> None:
        """``model_dirs`` in increasing precedence; ``settings``: the ``models:`` configuration section."""
        self.model_dirs = [Path(d) for d in model_dirs]
        self.settings = settings
        self._available = available_providers
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._loaded: dict[tuple[str, str, str], _Loaded] = {}
        self._key_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._errors: dict[str, str] = {}  # last load error per model name (for describe)
        self._entries = self._scan()

    @classmethod
    def from_config(cls, models: ModelsSection) -> "ModelStore":
        """Bundled models, overridden/extended by ``models.dir`` when configured."""
        dirs: list[Path] = []
        bundled = bundled_models_dir()
        if bundled is not None:
            dirs.append(bundled)
        if models.dir:
            dirs.append(Path(models.dir))
        return cls(dirs, models)

    # ------------------------------------------------------------------ scanning

    def _fix_export(self, name: str) -> str:
        target = self.model_dirs[-1] if self.model_dirs else Path("<models.dir>")
        return (f"re-export it with `cardionode export <family> --checkpoint <ckpt> --out {target}` "
                f"(or restore {target / name}) and run `cardionode models reload`")

    def _scan(self) -> dict[str, _Entry]:
        entries: dict[str, _Entry] = {}
        for root in self.model_dirs:
            if not root.is_dir():
                log.warning("models directory %s does not exist; no models from there", root)
                continue
            for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
                has_manifest = (sub / MANIFEST_NAME).is_file()
                if not has_manifest and not any(sub.glob("*.onnx")):
                    continue
                name = sub.name
                entry = _Entry(name=name, directory=sub, manifest=None)
                try:
                    manifest = ModelManifest.load(sub / MANIFEST_NAME)
                    if manifest.name != name:
                        raise ManifestError(f"{sub / MANIFEST_NAME}: key 'name': {manifest.name!r} differs from the "
                                            f"directory name {name!r}")
                    entry.manifest = manifest
                    if not entry.onnx_path.is_file():
                        entry.error = f"{entry.onnx_path} is missing"
                        entry.fix = self._fix_export(name)
                except ManifestError as exc:
                    entry.error = f"invalid manifest: {exc}"
                    entry.fix = self._fix_export(name)
                if name in entries:
                    log.debug("model %r in %s overrides %s", name, root, entries[name].directory)
                entries[name] = entry
        return entries

    # ------------------------------------------------------------------ loading

    def _open(self, entry: _Entry) -> _Loaded:
        """Check sha256 and declared tensors, then create the session with the first provider that works."""
        manifest = entry.manifest
        assert manifest is not None
        path = entry.onnx_path
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ModelError(entry.name, f"{path} is missing — {self._fix_export(entry.name)}") from None
        digest = sha256_file(path)
        if digest != manifest.sha256:
            raise ModelError(
                entry.name,
                f"sha256 mismatch for {path} (manifest says {manifest.sha256[:16]}…, file is {digest[:16]}…) — "
                f"the file is corrupt or was replaced; {self._fix_export(entry.name)}",
            )
        s = self.settings
        so = session_options(s.intra_op_threads, s.inter_op_threads, s.graph_optimization)
        chain = provider_chain(s.providers, manifest, tensorrt_fp16=s.tensorrt_fp16,
                               tensorrt_cache_dir=s.tensorrt_cache_dir, available=self._available)
        session = None
        last_exc: Exception | None = None
        for i in range(len(chain)):
            sub = chain[i:]
            try:
                session = ort.InferenceSession(str(path), sess_options=so, providers=[n for n, _ in sub],
                                               provider_options=[o for _, o in sub])
                break
            except Exception as exc:  # a GPU provider that is compiled in but cannot start: try the next
                last_exc = exc
                log.warning("model %r: session with %s failed (%s); trying the next provider",
                            entry.name, describe_chain(sub), str(exc).splitlines()[0] if str(exc) else exc)
        if session is None:
            raise ModelError(entry.name,
                             f"ONNX Runtime cannot load {path}: {last_exc} — {self._fix_export(entry.name)}")
        provider = session.get_providers()[0]
        self._check_declared(entry.name, manifest, session, path)
        log.debug("model %r version %s loaded from %s on %s (requested %s)", manifest.name, manifest.version,
                  path, provider, describe_chain(chain))
        return _Loaded(session=session, provider=provider, path=path, stat=(st.st_size, st.st_mtime_ns))

    def _check_declared(self, name: str, manifest: ModelManifest, session: ort.InferenceSession, path: Path) -> None:
        """The ONNX file's own inputs/outputs must agree with the manifest (a swapped file is caught here)."""
        for kind, declared, actual in (("input", manifest.inputs, session.get_inputs()),
                                       ("output", manifest.outputs, session.get_outputs())):
            got = {a.name: a for a in actual}
            for spec in declared:
                a = got.get(spec.name)
                if a is None:
                    raise ModelError(name, f"{path} has no {kind} {spec.name!r} (it has {sorted(got)}); the file does "
                                           f"not belong to this manifest — {self._fix_export(name)}")
                shape = list(a.shape)
                bad = len(shape) != len(spec.shape) or any(
                    isinstance(m, int) and isinstance(f, int) and m != f for m, f in zip(spec.shape, shape)
                )
                dtype = _ORT_TYPES.get(a.type)
                if bad or (dtype is not None and dtype != spec.dtype):
                    raise ModelError(name, f"{kind} {spec.name!r} of {path} is {a.type} {shape}, the manifest says "
                                           f"{spec.dtype} {list(spec.shape)} — {self._fix_export(name)}")

    def _key_lock(self, key: tuple[str, str, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def acquire(self, name: str) -> ModelHandle:
        """A handle on the current version of ``name`` (session created on first use and shared)."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            dirs = ", ".join(str(d) for d in self.model_dirs) or "no models directory configured"
            raise ModelError(name, f"not installed (looked in {dirs}; installed: {', '.join(self.names()) or 'none'}) "
                                   f"— {self._fix_export(name)}, or set models.dir in the config")
        if entry.error or entry.manifest is None:
            raise ModelError(name, f"{entry.error} — {entry.fix}")
        key = entry.key
        assert key is not None
        with self._key_lock(key):
            with self._lock:
                loaded = self._loaded.get(key)
            if loaded is None:
                try:
                    loaded = self._open(entry)
                except ModelError as exc:
                    with self._lock:
                        self._errors[name] = str(exc)
                    raise
                with self._lock:
                    self._loaded[key] = loaded
                    self._errors.pop(name, None)
        return ModelHandle(entry.manifest, loaded.session, loaded.provider, loaded.path)

    def verify(self) -> list[tuple[str, str]]:
        """(name, problem — fix) of every model that cannot be used: scan errors and sha256 mismatches.

        Reads each model file once; creates no ONNX Runtime session (start-up
        checks run this before the node binds its ports).
        """
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.name)
        problems: list[tuple[str, str]] = []
        for e in entries:
            if e.error or e.manifest is None:
                problems.append((e.name, f"{e.error} — {e.fix}"))
                continue
            try:
                digest = sha256_file(e.onnx_path)
            except OSError as exc:
                problems.append((e.name, f"cannot read {e.onnx_path}: {exc.strerror} — {self._fix_export(e.name)}"))
                continue
            if digest != e.manifest.sha256:
                problems.append((e.name, f"sha256 mismatch for {e.onnx_path} (manifest says {e.manifest.sha256[:16]}…, "
                                         f"file is {digest[:16]}…): the file is corrupt or was replaced — "
                                         f"{self._fix_export(e.name)}"))
        return problems

    def names(self) -> list[str]:
        """Every model name found (usable or not)."""
        with self._lock:
            return sorted(self._entries)

    def manifest(self, name: str) -> ModelManifest:
        """The manifest of ``name`` without loading a session."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or entry.manifest is None:
            return self.acquire(name).manifest  # raises the same ModelError acquire would
        return entry.manifest

    def describe(self) -> list[dict[str, Any]]:
        """One row per model for ``models list`` and the status API."""
        rows = []
        with self._lock:
            entries = list(self._entries.values())
            loaded = dict(self._loaded)
            errors = dict(self._errors)
        for e in sorted(entries, key=lambda e: e.name):
            m = e.manifest
            row: dict[str, Any] = {
                "name": e.name,
                "version": m.version if m else None,
                "task": m.task if m else None,
                "provenance": m.provenance.summary() if m else None,
                "synthetic": m.provenance.synthetic if m else None,
                "provider": "not loaded",
                "source": str(e.directory),
                "sha256": m.sha256 if m else None,
                "status": "ok",
                "error": None,
            }
            if e.key in loaded:
                row["provider"] = short_provider_name(loaded[e.key].provider)
            err = e.error and f"{e.error} — {e.fix}" or errors.get(e.name)
            if err:
                row["status"], row["error"] = "error", err
            rows.append(row)
        return rows

    def reload(self) -> dict[str, tuple[str | None, str | None]]:
        """Rescan the directories; returns {name: (old_version, new_version)} for every model that changed.

        Handles already acquired keep their sessions (jobs in flight finish on
        the old version); the store drops its own references to sessions of
        versions that are no longer installed, so they are freed when the last
        handle goes.  A file changed in place under an unchanged manifest is
        re-hashed on the next acquire.
        """
        new_entries = self._scan()
        changes: dict[str, tuple[str | None, str | None]] = {}
        with self._lock:
            old_entries = self._entries
            for name in sorted(set(old_entries) | set(new_entries)):
                old, new = old_entries.get(name), new_entries.get(name)
                old_v = old.manifest.version if old and old.manifest and not old.error else None
                new_v = new.manifest.version if new and new.manifest and not new.error else None
                key_changed = (old.key if old else None) != (new.key if new else None)
                if key_changed or bool(old and old.error) != bool(new and new.error):
                    changes[name] = (old_v, new_v)
            self._entries = new_entries
            live = {e.key for e in new_entries.values() if e.key}
            for key in list(self._loaded):
                loaded = self._loaded[key]
                stale = key not in live
                if not stale:
                    try:
                        st = loaded.path.stat()
                        stale = (st.st_size, st.st_mtime_ns) != loaded.stat
                    except FileNotFoundError:
                        stale = True
                if stale:
                    del self._loaded[key]
            for name in list(self._errors):
                if name in changes or name not in new_entries:
                    self._errors.pop(name, None)
        for name, (old_v, new_v) in changes.items():
            log.info("model %r: %s -> %s", name, old_v or "absent/unusable", new_v or "absent/unusable")
        return changes

    def warmup(self, names: Sequence[str] | None = None) -> dict[str, str]:
        """Load and run each model once; returns name -> "ok (<provider>, <ms> ms)" or the error. Never raises."""
        results: dict[str, str] = {}
        for name in names if names is not None else self.names():
            try:
                handle = self.acquire(name)
                seconds = handle.warmup() if self.settings.warmup else 0.0
                results[name] = f"ok ({short_provider_name(handle.provider)}, {seconds * 1000:.0f} ms)"
            except ModelError as exc:
                results[name] = str(exc)
                with self._lock:
                    self._errors[name] = str(exc)
                log.error("%s", exc)
        return results


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
