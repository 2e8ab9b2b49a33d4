"""The benchmark command line: bad values are refused with a message naming them, never a traceback."""

import pytest

from benchmarks import __main__ as cli


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["throughput", "--steps", "-1"], "argument --steps: expected a positive whole number, received '-1'"),
        (["throughput", "--rounds", "0"], "argument --rounds: expected a positive whole number, received '0'"),
        (["gemm", "--hidden", "-3"], "argument --hidden: expected a positive whole number, received '-3'"),
        (["overhead", "--calls", "x"], "argument --calls: expected a positive whole number, received 'x'"),
    ],
)
def test_bad_sizes_are_argument_errors_naming_the_option(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_value_error_of_a_command_is_one_line_and_exit_code_2(capsys):
    code = cli.main(["throughput", "--models", "mlp", "--policies", "mixed_bf17"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("python -m benchmarks throughput: error: policies: Cannot parse dtype policy 'mixed_bf17'")
    assert "Traceback" not in err and "Did you mean 'mixed_bfloat16'?" in err


def test_the_report_accepts_quick(monkeypatch):
    from benchmarks import report

    seen = []
    monkeypatch.setattr(report, "main", lambda options: seen.append(options.quick) or 0)
    assert cli.main(["--quick"]) == 0 and seen == [True]
