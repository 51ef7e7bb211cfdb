"""B26: an exclusion list matches identity names with separators removed (``S 2`` = ``s2``,
``Jean-Paul`` = ``Jean Paul`` = ``JeanPaul``): over-excluding is safe, leaking is not."""

from __future__ import annotations

from pack.helpers import lfw_mini_people, make_align_artifact

from facecl.pack.artifact import read_classes
from facecl.pack.config import PackConfig
from facecl.pack.stage import run_pack

NAMES = {"Ann_Veneman": "Jean-Paul_Dubois", "Ali_Naimi": "S 2", "Alec_Baldwin": "Kept_Person"}


def test_separators_do_not_leak_an_excluded_identity(tmp_path):
    people = lfw_mini_people(list(NAMES), 3)
    art = make_align_artifact(tmp_path, people, rename=NAMES)
    lst = tmp_path / "eval_names.txt"
    lst.write_text("JeanPaul Dubois\ns2\n", encoding="utf-8")
    res = run_pack([art], tmp_path / "p", PackConfig(exclude=(str(lst),), min_images=1))
    excl = res.manifest.extra["exclusions"][0]
    assert sorted(excl["removed"]) == ["Jean-Paul_Dubois", "S 2"]
    assert [c.name for c in read_classes(tmp_path / "p")] == ["Kept_Person"]
