"""Every page opens; the Data page lists the sample and reports unreadable files."""

from __future__ import annotations

import shutil

from tests.app.helpers import SAMPLE_IMAGES, wait_until


def test_every_page_opens(window, qtbot):
    for key in ("data", "train", "features", "video", "search"):
        window.show_page(key)
        qtbot.wait(20)
        assert window.stack.currentWidget() is window.pages[key]
        assert window.pages[key].isVisible()
    assert window.windowTitle() == "Selfsup Studio"


def test_data_page_lists_classes_and_unreadable_files(window, qtbot, tmp_path):
    folder = tmp_path / "photos"
    for cls in ("circle", "square"):
        (folder / cls).mkdir(parents=True)
        for src in sorted((SAMPLE_IMAGES / "val" / cls).glob("*.jpg"))[:3]:
            shutil.copy(src, folder / cls / src.name)
    (folder / "circle" / "empty.jpg").write_bytes(b"")
    (folder / "square" / "notes.png").write_text("this is text, not a PNG")
    page = window.data_page
    page.open_path(folder, "images")
    wait_until(
        qtbot,
        lambda: page.listing is not None and not page.checking,
        60,
        "the folder to be checked",
    )
    assert len(page.listing.items) == 8
    assert dict(page.listing.classes) == {"circle": 4, "square": 4}
    bad = {p.split("/")[-1] for p, _ in page.bad}
    assert bad == {"empty.jpg", "notes.png"}
    assert page.class_table.rowCount() == 2
    assert "2 file(s) will be skipped" in page.bad_label.text()
    # thumbnails: the good ones decode (and land in the disk cache), the bad ones are flagged
    page.grid.thumbs.set_items(page.thumb_items)
    for row in range(8):
        page.grid.thumbs.data(page.grid.thumbs.index(row), 1)  # DecorationRole asks for it
    wait_until(
        qtbot, lambda: len(page.grid.thumbs.pix) + len(page.grid.thumbs.bad) == 8, 30, "thumbnails"
    )
    assert len(page.grid.thumbs.pix) == 6
    # the recent list remembers the folder across sessions
    from app.gui.paths import Settings

    assert str(folder.resolve()) in Settings().recent("folders")


def test_data_page_error_is_one_line_dialog(window, qtbot, tmp_path):
    from app.gui.errors import dialogs

    (tmp_path / "empty").mkdir()
    window.data_page.open_path(tmp_path / "empty", "images")
    wait_until(
        qtbot,
        lambda: dialogs.last_message.startswith(str(tmp_path / "empty")),
        20,
        "the error dialog",
    )
    assert "no images found" in dialogs.last_message
    assert "\n" not in dialogs.last_message and "Traceback" not in dialogs.last_message


def test_data_page_opens_video_and_caption_file(window, qtbot, studio_home):
    from tests.app.helpers import REPO

    page = window.data_page
    video = REPO / "assets" / "sample" / "video" / "shapes.mp4"
    page.open_path(video)  # kind guessed from the extension
    wait_until(qtbot, lambda: page.listing is not None, 60, "the video frames")
    assert page.listing.kind == "video" and len(page.listing.items) == 48
    assert "48 frames" in page.listing.info
    for row in range(3):
        page.grid.thumbs.data(page.grid.thumbs.index(row), 1)
    wait_until(qtbot, lambda: len(page.grid.thumbs.pix) >= 3, 20, "frame thumbnails")

    captions = REPO / "assets" / "sample" / "captions" / "val.tsv"
    page.open_path(captions, "captions")
    wait_until(
        qtbot,
        lambda: page.listing is not None and page.listing.kind == "captions",
        60,
        "the caption file",
    )
    assert len({it.path for it in page.listing.items}) == 120  # several captions per image
    assert page.listing.items[0].data["caption"]
    # thumbnails of image files land in the user's cache folder, keyed by path/size/mtime
    for row in range(4):
        page.grid.thumbs.data(page.grid.thumbs.index(row), 1)
    wait_until(qtbot, lambda: len(page.grid.thumbs.pix) >= 4, 20, "caption thumbnails")
    assert len(list((studio_home / "cache" / "thumbs").rglob("*.jpg"))) >= 4
