import pytest

from modeling.networks.tiling import even_tile, tile_starts


@pytest.mark.parametrize("size", [512, 1024, 1500, 2048, 4096])
def test_even_tiles_cover_the_map_with_the_fewest_tiles_and_just_the_overlap(size):
    tile = even_tile(size, 1024, 64)
    starts = tile_starts(size, tile, 64)
    assert tile <= 1024 and starts[0] == 0 and starts[-1] + tile == size
    overlaps = [a + tile - b for a, b in zip(starts, starts[1:], strict=False)]
    assert all(64 <= o < 64 + len(starts) for o in overlaps)
    if size <= 1024:
        assert tile == size  # the whole map in one call
    else:  # one tile fewer would not cover the map with that overlap
        assert (len(starts) - 1) * (1024 - 64) + 64 < size
