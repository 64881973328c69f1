"""A long-lived face restorer for host applications: a model folder in, restored images plus what happened out.

A host (the WebUI's face restorer, its API route) keeps one :class:`FolderRestorer` and calls
:meth:`FolderRestorer.restore` per image. It
- chooses the model: a named file, or "auto" = the largest usable one, falling back past files that do not
  load (and saying which were skipped and why);
- keeps the loaded model between calls, keyed on the file's identity (path, size, modification time), so a
  file replaced under the same name is read again;
- remembers a file that failed to load under the same identity, so a broken file is read (and its error
  reported) once, not once per image;
- returns an :class:`Outcome`: the image, the number of faces restored, the model and strength used, or why
  nothing was restored, and which problems are new (for a host to show once).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import inspect_checkpoint, load_model
from .download import missing_model_message
from .errors import GPENError, ModelNotFoundError
from .model import GPENModel
from .model_paths import checkpoint_size, list_checkpoints
from .options import check_strength
from .pipeline import restore_faces

#: The model choice meaning "the largest usable checkpoint in the folder".
AUTO = "auto"

FileIdentity = tuple[str, int, int]


def file_identity(path: str | os.PathLike) -> FileIdentity:
    """(absolute path, size in bytes, modification time in ns): changes when a file is replaced or edited.
    Raises OSError when the file cannot be stat'ed."""
    path = Path(path).absolute()
    stat = path.stat()
    return path.as_posix(), stat.st_size, stat.st_mtime_ns


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


@dataclass
class Outcome:
    """What one :meth:`FolderRestorer.restore` call did.

    image: the result, same shape and dtype as the input (the input itself when nothing was restored).
    faces: faces restored (pasted back); found: faces detected and selected.
    model: the checkpoint used, or None. strength: the strength used, in [0, 1].
    error: why nothing was restored (full message with the fix), or None.
    skipped: "file name: reason" for each checkpoint passed over by the automatic choice.
    interrupted: the host's interrupt stopped the run; the image keeps the ``faces`` restored before it.
    warnings: messages raised as Python warnings while loading or restoring (e.g. a slow precision).
    new_problems: the messages among error/skipped/warnings not returned by an earlier call: show these once.
    exception: the unexpected exception behind ``error`` (not a GPENError), for a traceback; else None.
    """
    image: np.ndarray
    faces: int = 0
    found: int = 0
    model: Path | None = None
    strength: float = 1.0
    error: str | None = None
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    new_problems: list[str] = field(default_factory=list)
    exception: Exception | None = None

    @property
    def info(self) -> str:
        """One line for an infotext / log: model, strength and faces, or "failed: reason"; plus skipped files."""
        if self.error is not None:
            text = f"failed: {_first_line(self.error)}"
        else:
            faces = f"{self.faces} of {self.found} faces (interrupted)" if self.interrupted else f"{self.faces} faces"
            text = f"{self.model.name if self.model else 'no model'}, strength {self.strength:g}, {faces}"
        if self.skipped:
            text += "; skipped " + "; ".join(self.skipped)
        return text


class FolderRestorer:
    """Restores faces with the GPEN checkpoints of one folder; see the module docstring.

    model_dir: the folder (searched recursively); models are named by their POSIX path relative to it.
    Not thread-safe: a host serialises calls (the WebUI's queue lock does).
    """

    def __init__(self, model_dir: str | os.PathLike, *, python: str | None = None,
                 workdir: str | os.PathLike | None = None):
        self.model_dir = Path(model_dir)
        self._python, self._workdir = python, workdir
        self._model: GPENModel | None = None
        self._model_id: FileIdentity | None = None
        self._failures: dict[FileIdentity, str] = {}
        self._reported: set[str] = set()

    def models(self) -> list[str]:
        """The checkpoint files in the folder, as sorted POSIX paths relative to it. Lists, never opens."""
        return [p.relative_to(self.model_dir).as_posix() for p in list_checkpoints(self.model_dir)]

    def missing_message(self) -> str:
        """Where to put a model and the download command, for this folder (see ``missing_model_message``)."""
        return missing_model_message([self.model_dir], self.model_dir, python=self._python, workdir=self._workdir)

    def candidates(self, choice: str = AUTO) -> list[Path]:
        """Files to try in order: the named file alone when it exists, else (``AUTO`` or a file gone since)
        every checkpoint whose size can be read from its tensor shapes, largest first (ties: later name)."""
        named = self.model_dir / choice
        if choice != AUTO and named.is_file():
            return [named]
        sized = [(checkpoint_size(p), p) for p in list_checkpoints(self.model_dir)]
        return [p for size, p in sorted(((s, p) for s, p in sized if s), key=lambda sp: (sp[0], sp[1].name),
                                        reverse=True)]

    def unreadable(self) -> list[str]:
        """"file name: reason" for each checkpoint in the folder that cannot be read as a GPEN model at all
        (the automatic choice skips them). Each file is examined once per identity."""
        notes = []
        for path in list_checkpoints(self.model_dir):
            if checkpoint_size(path) is not None:
                continue
            try:
                identity = file_identity(path)
            except OSError as exc:
                notes.append(f"{path.name}: cannot be read ({exc.strerror or exc})")
                continue
            if identity not in self._failures:
                try:
                    inspect_checkpoint(path)
                    continue  # readable after all (replaced meanwhile): the next listing sizes it
                except (GPENError, OSError) as exc:
                    self._failures[identity] = str(exc)
            notes.append(f"{path.name}: {_first_line(self._failures[identity])}")
        return notes

    def load(self, path: Path, device) -> GPENModel:
        """The model in ``path`` on ``device``, read once per file identity. A file that failed before with
        the same identity raises its remembered error again without being read. Raises GPENError/OSError."""
        try:
            identity = file_identity(path)
        except OSError as exc:
            raise ModelNotFoundError(f"{path}: cannot be read ({exc.strerror or exc}); put the model back or "
                                     "choose another in the settings") from None
        if identity in self._failures:
            raise GPENError(self._failures[identity])
        if self._model_id != identity:
            self._model = self._model_id = None  # drop the old weights before reading the new ones
            try:
                self._model = load_model(path, device=device)
            except Exception as exc:  # a broken file may fail anywhere in torch; remember it whatever it was
                message = str(exc) if isinstance(exc, GPENError) else f"{path}: {type(exc).__name__}: {exc}"
                self._failures[identity] = message
                raise GPENError(message) from exc
            self._model_id = identity
        return self._model.to(device)

    def offload(self, device) -> None:
        """Move the cached model (if any) to ``device``, e.g. the CPU to free GPU memory between runs."""
        if self._model is not None:
            self._model.to(device)

    def choose(self, choice: str, device) -> tuple[GPENModel, list[str]]:
        """Load the model ``choice`` asks for (see :meth:`candidates`): (model, skipped) where skipped lists
        "file name: reason" for each unusable file passed over by the automatic choice. Raises GPENError when
        none is usable: the missing-model message, the named file's own error, or every file's reason."""
        named = self.model_dir / choice
        if choice != AUTO and named.is_file():  # the user's pick: its own error, never another file
            try:
                return self.load(named, device), []
            except OSError as exc:
                raise GPENError(str(exc)) from None
        if not list_checkpoints(self.model_dir):
            raise ModelNotFoundError(f"no GPEN model in {self.model_dir}\n{self.missing_message()}")
        skipped = self.unreadable()
        for path in self.candidates(AUTO):
            try:
                return self.load(path, device), skipped
            except (GPENError, OSError) as exc:
                skipped.append(f"{path.name}: {_first_line(str(exc))}")
        raise GPENError(f"no usable GPEN model in {self.model_dir}: " + "; ".join(skipped)
                        + f"\n{self.missing_message()}")

    def restore(
        self,
        image: np.ndarray,
        *,
        choice: str = AUTO,
        strength: object = 1.0,
        detector: str = "auto",
        color_correction: bool = False,
        search_dirs: Sequence[str | os.PathLike] = (),
        device=None,
        check_interrupt: Callable[[], bool | None] | None = None,
        on_oom: Callable[[], None] | None = None,
    ) -> Outcome:
        """Restore every face of ``image`` ((H, W, 3) RGB or (H, W, 4) RGBA, uint8 or uint16; alpha kept).

        choice: a model name from :meth:`models` or ``AUTO``. strength: clamped to [0, 1] (a stored setting;
        validate user input first with ``options.check_strength``). check_interrupt() is asked before each
        face; True stops there, keeping the faces done so far (the outcome is marked interrupted). Never
        raises for a model or restore failure (not even an unexpected one): the outcome then carries the
        input image and the error.
        """
        outcome = Outcome(image, strength=check_strength(strength, clamp=True))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model, outcome.skipped = self.choose(choice, device)
                outcome.model = model.path
                result = restore_faces(image, model, detector=detector, alpha=outcome.strength,
                                       color_correction=color_correction, search_dirs=search_dirs,
                                       keep_crops=False, device=device, check_interrupt=check_interrupt,
                                       on_oom=on_oom)
                outcome.image, outcome.found, outcome.interrupted = result.image, result.n_selected, result.interrupted
                outcome.faces = result.n_faces if outcome.strength > 0 else 0
            except GPENError as exc:
                outcome.error = str(exc)
            except Exception as exc:  # a bug or a device failure: the host shows it (with exc) and goes on
                outcome.error, outcome.exception = f"{type(exc).__name__}: {exc}", exc
        outcome.warnings = list(dict.fromkeys(str(w.message) for w in caught))
        problems = [p for p in (outcome.error, *outcome.skipped, *outcome.warnings) if p]
        outcome.new_problems = [p for p in problems if p not in self._reported]
        self._reported.update(problems)
        return outcome

