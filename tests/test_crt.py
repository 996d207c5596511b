import numpy as np
import pytest

from dashc import crt


@pytest.mark.parametrize("moduli", [(2, 3, 5, 7, 11, 13, 17, 19), (37, 167, 173), (3, 5, 7), (2,)])
def test_round_trip_whole_range(moduli):
    lo, hi = crt.signed_range(moduli)
    step = max(1, (hi - lo) // 20000)
    x = np.concatenate([np.arange(lo, hi + 1, step), [lo, hi, 0, -1, 1]]).astype(np.int64)
    x = x[(x >= lo) & (x <= hi)]
    assert (crt.from_residues(crt.to_residues(x, moduli), moduli) == x).all()


def test_mixed_radix_digits_reconstruct():
    order = (3, 7, 5, 2)
    x = np.arange(210)
    digits = crt.mixed_radix_digits(crt.to_residues(x, order), order)
    value = digits[0] + 3 * digits[1] + 21 * digits[2] + 105 * digits[3]
    assert (value == x).all()
    # with 2 last, the top digit is the sign bit of the signed value
    signed = np.where(x >= 105, x - 210, x)
    assert ((digits[3] == 1) == (signed < 0)).all()


def test_label_length_and_base_checks():
    assert crt.label_length(2) == 128
    assert crt.label_length(3) == 80
    assert crt.label_length(173) == 17
    for q in (2, 3, 5, 173, 251):
        n = crt.label_length(q)
        assert q ** n <= 2 ** 128 < q ** (n + 1)
    with pytest.raises(ValueError, match="not prime"):
        crt.check_base((32, 167, 173))
    with pytest.raises(ValueError, match="repeat"):
        crt.check_base((3, 3))
    crt.check_base((31, 167, 173))


def test_inverse():
    for p in (3, 5, 7, 167):
        for a in range(1, p):
            assert a * crt.inverse(a, p) % p == 1
