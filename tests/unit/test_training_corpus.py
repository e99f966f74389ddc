"""`diffusion-asr corpus` on a small file tree laid out like the Debian packages it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.training import corpus
from app.training.commands import main as training_main
from app.training.corpus import SPLIT_NAMES, build_corpus, clean_sentence, load_split, sentence_key

_FORTUNES = """Destiny is a good thing to accept when it is going your way.
\t\t-- Somebody Famous
%
Are we safe now?  I do not like it here.
%
RUN FOR YOUR LIVES NOW!
%
There are 3 kinds of people in this world.
%
are we SAFE now
"""
_FILLETS = '''dialogId("a1", "font_small", "Welcome to the most beautiful city of them all.")
dialogStr("Bienvenue dans la plus belle cité de toutes.")

dialogId("a2", "font_big", "Citizens, please remain very calm.")
dialogStr("Citoyens, gardez tous votre calme.")
'''
_HELP_ZH = "<p>Title is: 插入对象</p><p>只有当文档已链接到数据库时，才会显示此页面。</p><p>单元格 A1 的值。</p>"
_HELP_HI = "<p>चयनित नियंत्रण प्रविष्ट करता है.</p><p>Title is: दिखाएँ</p><p>LibreOffice में पाठ जोड़ें.</p>"


def _package_tree(root: Path, extra_fortunes: int = 0) -> None:
    """Every source the corpus reads, a few lines each, plus `extra_fortunes` generated sentences."""
    for source in corpus.SOURCES:
        (root / source.path).mkdir(parents=True, exist_ok=True)
    generated = "".join(f"%\nThe little boat number {chr(97 + i % 26)}{chr(97 + i // 26 % 26)} sails home.\n"
                        for i in range(extra_fortunes))
    (root / "usr/share/games/fortunes/misc").write_text(_FORTUNES + generated, encoding="utf-8")
    (root / "usr/share/games/fortunes/de/sprichworte").write_text("Wer rastet, der rostet sehr schnell.\n",
                                                                  encoding="utf-8")
    (root / "usr/share/games/fortunes/es/refranes").write_text("En boca cerrada no entran moscas.\n",
                                                               encoding="utf-8")
    level = root / "usr/share/games/fillets-ng/script/city"
    level.mkdir(parents=True)
    (level / "dialogs_en.lua").write_text(_FILLETS.replace("dialogStr", "--"), encoding="utf-8")
    (level / "dialogs_fr.lua").write_text(_FILLETS, encoding="utf-8")
    for lang in ("zh-CN", "hi", "de", "fr", "es"):
        page = root / f"usr/share/libreoffice/help/{lang}/text/shared/page.html"
        page.parent.mkdir(parents=True)
        page.write_text({"zh-CN": _HELP_ZH, "hi": _HELP_HI}.get(lang, "<p>Kurz.</p>"), encoding="utf-8")


def _all(out: Path, lang: str) -> dict[str, list[str]]:
    return {name: load_split(out, lang, name) for name in SPLIT_NAMES}


def test_sources_are_read_cleaned_and_deduplicated(tmp_path: Path) -> None:
    _package_tree(tmp_path / "root")
    build_corpus(tmp_path / "out", root=tmp_path / "root", dev_fraction=0.0, eval_fraction=0.0)
    en = _all(tmp_path / "out", "en")["train"]
    assert "Destiny is a good thing to accept when it is going your way." in en  # attribution dropped
    assert "Welcome to the most beautiful city of them all." in en  # Fish Fillets' English line
    # "are we SAFE now" is the same sentence as "Are we safe now?": one of them, the first seen.
    assert sum(sentence_key(s) == sentence_key("are we safe now") for s in en) == 1
    assert not any("3" in s or s.isupper() or "Somebody" in s for s in en)
    assert sorted(_all(tmp_path / "out", "fr")["train"]) == [
        "Bienvenue dans la plus belle cité de toutes.", "Citoyens, gardez tous votre calme."]
    assert _all(tmp_path / "out", "zh")["train"] == ["只有当文档已链接到数据库时，才会显示此页面。"]
    assert _all(tmp_path / "out", "hi")["train"] == ["चयनित नियंत्रण प्रविष्ट करता है."]


@pytest.mark.parametrize(("text", "lang", "expected"), [
    ("He said “hello there” to me.", "en", "He said hello there to me."),
    ("Il n’a pas de danger imminent.", "fr", "Il n'a pas de danger imminent."),
    ("Too short.", "en", None),
    ("Wählen Sie Format - Seite. .", "de", None),
    ("¿Dónde está la biblioteca hoy?", "es", "¿Dónde está la biblioteca hoy?"),
    ("这是 一个 句子。", "zh", "这是一个句子。"),
    ("这是Excel文件。", "zh", None),
    ("Straße über alles hier", "fr", None),
])
def test_clean_sentence(text: str, lang: str, expected: str | None) -> None:
    assert clean_sentence(text, lang) == expected


def test_eval_sentences_never_reach_train(tmp_path: Path) -> None:
    """With real fractions, every split gets sentences, no key is in two splits, and the split of a sentence does
    not depend on which other sentences the corpus holds (a smaller corpus deals its sentences the same way)."""
    _package_tree(tmp_path / "root", extra_fortunes=300)
    build_corpus(tmp_path / "big", ["en"], root=tmp_path / "root", dev_fraction=0.2, eval_fraction=0.2)
    big = _all(tmp_path / "big", "en")
    keys = {name: {sentence_key(s) for s in lines} for name, lines in big.items()}
    assert all(len(k) > 20 for k in keys.values())
    assert not keys["eval"] & keys["train"] and not keys["eval"] & keys["dev"] and not keys["dev"] & keys["train"]
    _package_tree(tmp_path / "small", extra_fortunes=100)
    build_corpus(tmp_path / "less", ["en"], root=tmp_path / "small", dev_fraction=0.2, eval_fraction=0.2)
    for name, lines in _all(tmp_path / "less", "en").items():
        assert {sentence_key(s) for s in lines} <= keys[name]
    # A rebuild gives the same files, byte for byte.
    build_corpus(tmp_path / "again", ["en"], root=tmp_path / "root", dev_fraction=0.2, eval_fraction=0.2)
    assert _all(tmp_path / "again", "en") == big


def test_command_names_missing_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(corpus, "build_corpus", lambda *a, **k: build_corpus(*a, **k, root=tmp_path))
    assert training_main(["corpus", "--out", str(tmp_path / "out"), "--languages", "hi"]) == 2
    assert "libreoffice-help-hi" in capsys.readouterr().err


def test_command_writes_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package_tree(tmp_path / "root")
    monkeypatch.setattr(corpus, "build_corpus", lambda *a, **k: build_corpus(*a, **k, root=tmp_path / "root"))
    assert training_main(["corpus", "--out", str(tmp_path / "out"), "--eval-fraction", "0"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["zh"]["train"] == 1 and manifest["counts"]["en"]["eval"] == 0
    assert manifest["sources"]["libreoffice-help-hi"]["licence"] == "MPL-2.0"
