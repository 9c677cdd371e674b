import pickle

import pytest

import accel
from accel import errors

ALL_ERRORS = [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_pickles_with_its_facts(cls: type[errors.AccelError]) -> None:
    if cls is errors.ModelNotAvailableError:
        err: errors.AccelError = cls("m", "1.0", "downloading", progress=0.5)
    else:
        err = cls("something failed", hint="do this", path="/x", needed=10)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.code == err.code
    assert back.facts == err.facts
    assert isinstance(back, errors.AccelError)


def test_codes_are_unique_snake_case() -> None:
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert code == code.lower() and " " not in code


def test_model_not_available_carries_reason() -> None:
    err = accel.ModelNotAvailableError("whisper", None, "not_installed")
    assert err.reason == "not_installed"
    assert "accel install whisper" in str(err)
    with pytest.raises(ValueError):
        accel.ModelNotAvailableError("whisper", None, "bogus")
