"""The fused kernels' cache of large buffers: never shared while in use, reused after, bounded."""

from __future__ import annotations

import pytest
import torch

import hub
from hub.kernels import cpu

ok, reason = cpu.available()
pytestmark = pytest.mark.skipif(not ok, reason=f"fused CPU kernels unavailable: {reason}")

SHAPE = (64, 4, 32768)  # 32 MiB of float32: large enough for the cache


@pytest.fixture(autouse=True)
def clean_cache(monkeypatch):
    monkeypatch.delenv("HUB_KERNEL_CACHE_BYTES", raising=False)
    cpu.empty_cache()
    yield
    cpu.empty_cache()


def layer(x: torch.Tensor) -> torch.Tensor:
    node = hub.LIF(beta=0.875, threshold=0.5, reset="subtract")
    sim = hub.Simulator(hub.Graph.chain(hub.Input(shape=x.shape[2:]), node), backend="fused")
    return sim(x)


def inputs(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 8, SHAPE, generator=g).float() / 8


def test_a_buffer_in_use_is_never_handed_out_again():
    assert SHAPE[0] * SHAPE[1] * SHAPE[2] * 4 >= cpu.HUGE_PAGES_MIN
    with torch.no_grad():
        first = layer(inputs(0))
        view = first[10:20]  # a view alone must keep the buffer too
        kept = view.clone()
        del first
        second = layer(inputs(1))
        third = layer(inputs(2))
    assert torch.equal(view, kept)
    pointers = {view.untyped_storage().data_ptr(), second.untyped_storage().data_ptr(),
                third.untyped_storage().data_ptr()}
    assert len(pointers) == 3


def test_a_released_buffer_is_reused_and_gives_the_same_results(monkeypatch):
    x = inputs(0)
    with torch.no_grad():
        first = layer(x)
        pointer, want = first.data_ptr(), first.clone()
        del first
        assert len(cpu._idle) == 1
        again = layer(x)
    assert again.data_ptr() == pointer
    assert torch.equal(again, want)
    monkeypatch.setenv("HUB_KERNEL_CACHE_BYTES", "0")  # off: fresh memory, same values
    with torch.no_grad():
        assert torch.equal(layer(x), want)
    assert cpu._idle == []  # `again` still holds the one cached buffer


def test_gradients_through_cached_buffers_match_uncached(monkeypatch):
    x = inputs(3)

    def grads() -> tuple[torch.Tensor, torch.Tensor]:
        xg = x.clone().requires_grad_()
        out = layer(xg)
        (out * torch.linspace(-1, 1, SHAPE[2])).sum().backward()
        return out.detach(), xg.grad

    want = grads()
    for _ in range(2):  # the second time from buffers the first released
        got = grads()
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert len(cpu._idle) > 0
    monkeypatch.setenv("HUB_KERNEL_CACHE_BYTES", "0")
    cpu.empty_cache()
    got = grads()
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_the_cache_is_bounded_per_size_and_in_bytes(monkeypatch):
    like = torch.empty(SHAPE)
    size = like.numel() * 4
    count = cpu.CACHE_PER_SIZE + 2
    held = [cpu._empty(like) for _ in range(count)]
    assert len({t.data_ptr() for t in held}) == count
    del held
    assert len(cpu._idle) == cpu.CACHE_PER_SIZE
    cpu.empty_cache()
    monkeypatch.setenv("HUB_KERNEL_CACHE_BYTES", str(size + size // 2))  # room for one
    held = [cpu._empty(like) for _ in range(2)]
    del held
    assert [n for n, _ in cpu._idle] == [size]
    other = torch.empty(SHAPE[0] + 8, *SHAPE[1:])
    t = cpu._empty(other)
    del t  # the newest is kept, the oldest goes
    assert [n for n, _ in cpu._idle] == [other.numel() * 4]
    monkeypatch.setenv("HUB_KERNEL_CACHE_BYTES", str(size // 2))  # smaller than any buffer
    t = cpu._empty(like)
    del t
    assert cpu._idle == []
    monkeypatch.setenv("HUB_KERNEL_CACHE_BYTES", "0")
    t = cpu._empty(like)
    del t
    assert cpu._idle == []


def test_small_buffers_are_not_cached():
    t = cpu._empty(torch.empty(4, 1024))
    del t
    assert cpu._idle == []


def test_empty_cache_releases_idle_buffers():
    t = cpu._empty(torch.empty(SHAPE))
    del t
    assert len(cpu._idle) == 1
    cpu.empty_cache()
    assert cpu._idle == []
