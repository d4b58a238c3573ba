"""The Data page's Qt-free session: the folder scan, class counts, split hint, the file check in
chunks with its counted warning, and video / caption listings, without a window."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import app.gui.sessions.data as data
from app.gui.sessions.data import DataSession, check_files, guess_kind, list_source
from engine.errors import UserError
from tests.app.helpers import REPO


class FakeSettings:
    """The two calls the session makes on app.gui.paths.Settings (which needs Qt)."""

    def __init__(self, recent: dict[str, list[str]] | None = None):
        self.lists = recent or {}
        self.added: list[tuple[str, str]] = []

    def recent(self, kind: str) -> list[str]:
        return list(self.lists.get(kind, []))

    def add_recent(self, kind: str, path) -> None:
        self.added.append((kind, str(path)))


def check_all(s: DataSession) -> int:
    """What the page does on its worker thread, synchronously; the number of chunks."""
    n = 0
    while paths := s.next_chunk():
        s.chunk_checked(len(paths), check_files(paths))
        n += 1
    return n


def test_sessions_import_no_qt():
    code = (
        "import sys, app.gui.sessions.data, app.gui.sessions.train;"
        "print([m for m in sys.modules if m.split('.')[0] in ('PySide6','pyqtgraph','shiboken6')])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_class_folders_with_a_corrupt_image_give_counts_and_a_counted_warning(shapes_dir):
    (shapes_dir / "disc" / "broken.png").write_text("this is text, not a PNG")
    settings = FakeSettings()
    s, changes, listed = DataSession(settings), [], []
    s.changed.connect(lambda: changes.append((len(s.bad), s.checking)))
    s.listed.connect(listed.append)
    path, kind = s.open(shapes_dir)  # a folder: images
    assert (path, kind) == (shapes_dir, "images") and s.listing is None
    s.set_listing(list_source(path, kind))
    lst = s.listing
    assert listed == [lst] and settings.added == [("folders", str(shapes_dir))]
    assert dict(lst.classes) == {"checker": 12, "disc": 13, "stripes": 12}
    assert lst.info == "37 images in 3 classes" and lst.train_hint == ""
    assert s.class_counts() == [("checker", 12), ("disc", 13), ("stripes", 12)]
    assert s.filter_choices()[0] == ("All (37)", None)
    assert s.filter_choices()[1:] == [("checker (12)", "checker"), ("disc (13)", "disc"), ("stripes (12)", "stripes")]  # fmt: skip
    # interleaved: the first screenful shows every class
    assert [x.data["class"] for x in lst.items[:3]] == ["checker", "disc", "stripes"]
    assert len(s.samples("disc")) == 13 and all(x.label == "disc" for x in s.samples("disc"))
    assert s.can_train and s.summary_html() == "<b>Image folder</b><br>37 images in 3 classes"
    # the check: nothing bad before it runs, one counted warning after
    assert s.checking and s.bad_title() == "none so far (still checking)"
    assert check_all(s) == 1 and not s.checking and s.checked == 37
    assert [Path(p).name for p, _ in s.bad] == ["broken.png"]
    assert s.bad_title() == "1 file(s) will be skipped:"
    assert s.bad_lines()[0].startswith("broken.png: ")
    assert changes == [(1, True), (1, False)]  # the bad file, then the end of the check
    # a thumbnail that fails to decode later is not counted twice
    s.add_bad(s.bad[0][0])
    assert len(s.bad) == 1


def test_check_runs_in_chunks_and_a_clean_folder_says_so(shapes_dir, monkeypatch):
    monkeypatch.setattr(data, "CHECK_CHUNK", 10)
    s = DataSession()
    s.set_listing(list_source(*s.open(shapes_dir, "images")))
    assert check_all(s) == 4 and s.checked == 36 and s.bad == []
    assert s.bad_title() == "none: every file opened"
    # a thumbnail the engine's header check let through but Qt cannot decode
    s.add_bad(str(shapes_dir / "disc" / "000.png"))
    assert s.bad == [(str(shapes_dir / "disc" / "000.png"), "cannot decode the image data")]


def test_split_layout_keeps_split_and_class_and_hints(shapes_dir, tmp_path):
    root = tmp_path / "splits"
    png = (shapes_dir / "disc" / "000.png").read_bytes()
    for split, cls, n in (("train", "cat", 3), ("train", "dog", 2), ("val", "cat", 1)):
        (root / split / cls).mkdir(parents=True)
        for i in range(n):
            (root / split / cls / f"{i}.png").write_bytes(png)
    lst = list_source(root, "images")
    assert dict(lst.classes) == {"train/cat": 3, "train/dog": 2, "val/cat": 1}
    assert lst.train_hint.startswith("This folder holds splits (train, val).")
    assert str(root / "train") in lst.train_hint
    assert {x.label for x in lst.items} == {"cat", "dog"}


def test_unlabelled_folder_empty_folder_and_missing_folder(shapes_dir, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(3):
        (loose / f"{i}.png").write_bytes((shapes_dir / "disc" / "000.png").read_bytes())
    s = DataSession()
    s.set_listing(list_source(loose, "images"))
    assert s.listing.info == "3 images, unlabelled (no class folders)"
    assert s.class_counts() == [] and s.filter_choices() == [("All (3)", None)]
    assert [x.label for x in s.listing.items] == ["0", "1", "2"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        list_source(tmp_path / "empty", "images")
    with pytest.raises(UserError, match="folder not found"):
        list_source(tmp_path / "missing", "images")
    s.failed()  # an error while listing or checking ends the check
    assert not s.checking


def test_caption_file_and_video_listings():
    captions = REPO / "assets" / "sample" / "captions" / "val.tsv"
    video = REPO / "assets" / "sample" / "video" / "shapes.mp4"
    assert guess_kind(video) == "video" and guess_kind(captions) == "captions"
    assert guess_kind(captions.parent) == "images"
    s = DataSession(FakeSettings())
    s.set_listing(list_source(*s.open(captions)))
    lst = s.listing
    assert lst.kind == "captions" and s.can_train and not s.checking
    assert len({x.path for x in lst.items}) == 120 and lst.items[0].data["caption"]
    assert lst.info.startswith(f"{len(lst.items)} captioned images (120 distinct files)")
    assert s.settings.added == [("captions", str(captions))]
    s.set_listing(list_source(*s.open(video), 32))
    lst = s.listing
    assert lst.kind == "video" and not s.can_train and not s.checking and s.next_chunk() == []
    assert len(lst.items) == 48 and lst.info.startswith("48 frames")
    assert max(lst.items[0].frame.shape[:2]) <= 32 and lst.items[0].frame.dtype.name == "uint8"
    assert lst.items[1].label.startswith("frame ")


def test_recent_entries_and_start_dir(tmp_path):
    s = DataSession(FakeSettings({"folders": [str(tmp_path / "a")], "videos": ["/v.mp4"]}))
    assert s.recent_entries() == [
        (f"folder: {tmp_path / 'a'}", ("images", str(tmp_path / "a"))),
        ("video: /v.mp4", ("video", "/v.mp4")),
    ]
    assert s.start_dir() == str(tmp_path)
    assert DataSession().start_dir() == str(Path.home()) and DataSession().recent_entries() == []
    with pytest.raises(UserError, match="unknown kind"):
        DataSession().open(tmp_path, "audio")
