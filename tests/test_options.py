"""The typed options (fixative.options): vocabularies, defaults, one check, the equivalent command line."""

import subprocess
import sys
from pathlib import Path

import pytest

from fixative import defaults
from fixative.errors import ConfigError
from fixative.options import (
    Intensity,
    Method,
    Mode,
    ModelOptions,
    OptOutLevel,
    OutputFormat,
    OutputOptions,
    Pattern,
    Precision,
    ProtectOptions,
    Quality,
    SearchOptions,
    TargetSpec,
)


def test_the_vocabularies_are_written_once():
    from fixative.core.optimizer import METHODS, PRECISIONS
    from fixative.presets import INTENSITIES, QUALITIES
    from fixative.provenance.optout import OPT_OUTS
    from fixative.targets import made, modes, pipelines
    from fixative.targets.patterns import PATTERNS

    assert tuple(Precision) == PRECISIONS == pipelines.PRECISIONS and tuple(Mode) == modes.MODES == made.MODES
    assert tuple(Method) == METHODS
    assert tuple(OutputFormat) == tuple(defaults.OUTPUT_FORMATS) and OutputFormat.TIFF.suffix == ".tif"
    assert tuple(Intensity) == tuple(INTENSITIES) and tuple(Quality) == tuple(QUALITIES)
    assert tuple(OptOutLevel) == tuple(sorted(OPT_OUTS, key=list(OptOutLevel).index)) and len(OPT_OUTS) == 4
    assert tuple(Pattern) == PATTERNS
    assert INTENSITIES[defaults.DEFAULT_INTENSITY] == defaults.DEFAULT_LIKE_JPEG
    standard = QUALITIES[defaults.DEFAULT_QUALITY]
    assert (standard.steps, standard.seconds) == (defaults.DEFAULT_STEPS, defaults.DEFAULT_SECONDS)


def test_importing_the_options_loads_no_torch():
    code = "import sys, fixative.options; sys.exit('torch' in sys.modules or 'numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_strings_become_enum_members_or_a_config_error_naming_the_field():
    assert SearchOptions(method="pgd").method is Method.PGD
    assert TargetSpec(mode="poison").mode is Mode.POISON
    with pytest.raises(ConfigError, match="unknown search.precision 'fp8'") as info:
        SearchOptions(precision="fp8")
    assert info.value.field == "search.precision"


@pytest.mark.parametrize(("options", "field", "words"), [
    (dict(search=SearchOptions(steps=0)), "search.steps", "search.steps must be at least 1"),
    (dict(search=SearchOptions(tile_size=100)), "search.tile_size", "search.tile_size must be at least 160"),
    (dict(search=SearchOptions(budget=1.5)), "search.budget", "between 0 and 1"),
    (dict(search=SearchOptions(like_jpeg=100)), "search.like_jpeg", "from 1 to 99"),
    (dict(models=ModelOptions(encoders=())), "models.encoders", "no encoder"),
    (dict(target=TargetSpec(mode="poison")), "target.image", "target.mode poison needs a target"),
    (dict(target=TargetSpec(style="x", image=Path("t.png"))), "target.style", "either target.image or"),
    (dict(target=TargetSpec(model="sd15")), "target.model", "target.model is for made targets"),
    (dict(output=OutputOptions(Path("o"), shard=(3, 2))), "output.shard", "between 1 and the count"),
])
def test_check_names_the_option_in_the_librarys_terms(options, field, words):
    opts = ProtectOptions(["a.png"], options.pop("output", OutputOptions(Path("o"))), **options)
    with pytest.raises(ConfigError, match=words) as info:
        opts.check()
    assert info.value.field == field and "--" not in str(info.value)


def test_presets_resolve_into_numbers():
    preview = SearchOptions.from_presets(quality="preview", intensity="high")
    assert (preview.steps, preview.seconds, preview.like_jpeg, preview.robust) == (8, 5.0, 50, "off")
    assert SearchOptions.from_presets() == SearchOptions()
    assert SearchOptions.from_presets(quality="best", steps=5).steps == 5


def test_the_command_line_says_what_differs_from_the_defaults():
    opts = ProtectOptions(["a.png", "b/"], OutputOptions(Path("o"), format="jpeg", shard=(1, 2)),
                          SearchOptions(budget=0.05, seconds=None), ModelOptions(encoders=("sd15", "taef2")),
                          TargetSpec(mode="poison", anchor="cat"))
    assert opts.check().to_command_line() == [
        "fixative", "protect", "a.png", "b/", "--out", "o", "--format", "jpeg", "--shard", "1/2",
        "--no-credentials", "--seconds", "none", "--budget", "0.05", "--encoder", "sd15", "--encoder", "taef2",
        "--mode", "poison", "--anchor", "cat"]


def test_the_command_line_builds_the_same_options_back():
    from fixative.cli.main import parse_protect_args, protect_options

    opts = ProtectOptions(["a.png"], OutputOptions(Path("o"), format="webp", recursive=True, opt_out="gen-ai"),
                          SearchOptions(steps=12, seconds=None, method="pgd", robust="strong", platform="instagram",
                                        views="off", tile_size=512, like_jpeg=60),
                          ModelOptions(encoders=("sd15",), check_encoders=("taef2",), lpips_net="vgg"),
                          TargetSpec(mode="immunize", pattern="gray"))
    words = opts.check().to_command_line()
    assert words[:2] == ["fixative", "protect"]
    assert protect_options(parse_protect_args(words[2:])) == opts


def test_the_command_line_names_its_flags_for_the_librarys_terms(tmp_path, caplog):
    from fixative.cli.main import main
    from fixative.cli.terms import error_line, flag_for, in_flags

    assert flag_for("search.tile_size") == "--tile-size" and flag_for("steps") == "--steps"
    assert in_flags("give either target.image or target.style, not both") == "give either --target or --style, not both"
    assert in_flags("see /x/target.image.png") == "see /x/target.image.png"  # a path is left alone
    assert error_line(ConfigError("must be positive", field="search.seconds")) == "--seconds: must be positive"
    assert main(["protect", "a.png", "--out", str(tmp_path), "--mode", "poison", "-q"]) == 2
    assert "error: --mode poison needs a target: --target or --anchor (or --objective away)" in caplog.text
