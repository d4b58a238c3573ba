"""The Data and Video pages' file dialogs offer exactly the extensions engine.media reads as
videos (.gif is an image there, so it is not offered as a video)."""

from __future__ import annotations

import re

from app.gui.file_filters import IMAGE_FILTER, VIDEO_FILTER
from engine.media import IMAGE_EXTS, VIDEO_EXTS


def _patterns(flt: str) -> set[str]:
    first = flt.split(";;")[0]
    return {p.lstrip("*") for p in re.search(r"\((.*)\)", first).group(1).split()}


def test_video_filter_is_engine_media_video_exts():
    assert _patterns(VIDEO_FILTER) == set(VIDEO_EXTS)
    assert ".gif" not in _patterns(VIDEO_FILTER)
    assert VIDEO_FILTER.endswith(";;All files (*)")


def test_image_filter_is_engine_media_image_exts():
    assert _patterns(IMAGE_FILTER) == set(IMAGE_EXTS)
    assert ".gif" in _patterns(IMAGE_FILTER)


def test_pages_use_the_shared_filters():
    from app.gui.pages import data, search, video

    assert data.VIDEO_FILTER is VIDEO_FILTER and video.VIDEO_FILTER is VIDEO_FILTER
    assert search.IMAGE_FILTER is IMAGE_FILTER
