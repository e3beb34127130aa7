"""Ranks that would run different numbers of steps under global mining get a clear error."""
import pytest

from hardneg.distributed import check_equal_step_counts
from hardneg.errors import UserError


def test_equal_step_counts_pass():
    check_equal_step_counts([12, 12])
    check_equal_step_counts([7])


def test_unequal_step_counts_name_the_ranks_the_sampler_and_the_fixes():
    with pytest.raises(UserError) as err:
        check_equal_step_counts([12, 11])
    message = str(err.value)
    assert "rank 0: 12, rank 1: 11" in message
    assert "hardneg/data/samplers.py" in message and "mining.scope=local" in message
