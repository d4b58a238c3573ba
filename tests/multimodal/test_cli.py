"""`selfsup index`, `selfsup search`, `selfsup eval zeroshot|retrieval` end to end."""

from __future__ import annotations

import json

import torch

from app.cli import main
from multimodal.models import TINY_MODEL, create_clip


def test_index_search_and_eval_commands(tmp_path, photos, capsys, make_photo_fn):
    torch.manual_seed(5)
    weights = tmp_path / "w.pt"
    torch.save(create_clip(TINY_MODEL).state_dict(), weights)
    idx = str(tmp_path / "idx")
    model = ["--model", TINY_MODEL, "--pretrained", str(weights), "--device", "cpu"]

    assert main(["index", str(photos), "--index", idx, *model, "--num-workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 6
    events = tmp_path / "index-events.jsonl"
    assert (
        main(["index", "--index", idx, "--num-workers", "0", "--events", str(events)]) == 0
    )  # model and roots from the index
    assert "6 unchanged" in capsys.readouterr().out
    recs = [json.loads(line) for line in events.read_text().splitlines()]
    assert recs[0]["type"] == "progress" and recs[0]["stage"] == "listing files"
    assert recs[-1]["type"] == "done" and recs[-1]["result"]["unchanged"] == 6

    query = photos / "a" / "p1.png"
    sheet = tmp_path / "sheet.png"
    assert (
        main(
            [
                "search",
                "--image",
                str(query),
                "--index",
                idx,
                "-k",
                "3",
                "--json",
                "--sheet",
                str(sheet),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["path"] == str(query) and len(out["results"]) == 3 and sheet.is_file()
    assert main(["search", "a red ball", "--index", idx, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["rank", "score", "path"]

    assert main(["search", "x", "--index", str(tmp_path / "nope")]) == 2
    assert "not an index" in capsys.readouterr().err
    assert (
        main(["search", "x", "--index", idx, "--model", TINY_MODEL, "--device", "cpu"]) == 2
    )  # other weights
    assert "index was made by" in capsys.readouterr().err

    for name in ("cat", "dog"):
        for i in range(2):
            make_photo_fn(tmp_path / "cls" / name / f"{i}.png", seed=10 * len(name) + i)
    assert (
        main(["eval", "zeroshot", *model, "--data", str(tmp_path / "cls"), "--num-workers", "0"])
        == 0
    )
    assert "top1" in capsys.readouterr().out
    (tmp_path / "caps.tsv").write_text(
        "filepath\ttitle\ncls/cat/0.png\ta cat\ncls/dog/0.png\ta dog\ncls/dog/1.png\tanother dog\n"
    )
    assert (
        main(
            [
                "eval",
                "retrieval",
                *model,
                "--captions",
                str(tmp_path / "caps.tsv"),
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    assert "t2i_R@1" in capsys.readouterr().out
