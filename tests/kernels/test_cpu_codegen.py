"""The CPU micro-kernel's code as built: in the installed ``rnnfast._cpu``, every loop that
runs a tile's multiply-adds (an innermost loop with at least 8 vector FMAs beside a broadcast)
keeps its vectors in registers. A loop that loads or stores a vector register on the stack
holds accumulators there: each k then goes through memory, which cost the AVX2 recurrence a
third of its speed when GCC did that to the tile inlined into its callers' loops (see
``chunk_block`` in cpp/src/cpu/microkernel.h). Reads the disassembly (objdump); runs no
kernel, so it checks the builds of every instruction set, also those this CPU cannot run.
"""

import re
import shutil
import subprocess

import pytest

from rnnfast import _cpu

OBJDUMP = shutil.which("objdump")

_INSTRUCTION = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
_BACKWARD_JUMP = re.compile(r"^j\w+\s+([0-9a-f]+)")
_STACK = re.compile(r"\(%r[sb]p\)")
# A row's value broadcast from memory (not a constant: those are %rip-relative), and what the
# activations' loops do beside their FMAs (compares, selects, divisions, exponent bits).
_BROADCAST = re.compile(r"^vbroadcasts[sd]\s+-?(0x[0-9a-f]+)?\(%r(?!ip)")
_OTHER_MATH = re.compile(r"^v(cmp|blendv|div|padd|psll|psrl|and|or|max|min)")


def tile_loops(disassembly):
    """[(address, vector width, FMA count, stack instructions)] for each innermost loop (a
    backward jump with no backward jump inside) of at most 120 instructions that holds at least 8
    FMAs on one width (ymm or zmm), a broadcast from memory and no other math, in ``objdump -d``
    output."""
    instructions = []
    for line in disassembly.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            instructions.append((int(m.group(1), 16), m.group(2)))
    index = {address: i for i, (address, _) in enumerate(instructions)}
    targets = []  # per instruction: the address its jump goes back to, or None
    for address, text in instructions:
        m = _BACKWARD_JUMP.match(text)
        target = int(m.group(1), 16) if m else None
        targets.append(target if target is not None and target < address else None)

    loops = []
    for end, target in enumerate(targets):
        if target is None or target not in index or end - index[target] >= 120:
            continue
        start = index[target]
        if any(t is not None for t in targets[start:end]):
            continue  # an outer loop
        body = [text for _, text in instructions[start:end + 1]]
        if not any(_BROADCAST.match(text) for text in body) or any(
                _OTHER_MATH.match(text) for text in body):
            continue
        for width in ("ymm", "zmm"):
            fmas = sum(text.startswith("vfmadd") and width in text for text in body)
            if fmas >= 8:
                stack = [text for text in body if width in text and _STACK.search(text)]
                loops.append((hex(target), width, fmas, stack))
    return loops


def test_tile_loop_parser():
    """A loop whose accumulator goes through the stack is found; a clean one passes; an outer
    loop around them and an activation's loop (constants on the stack) are not counted."""
    fma = "vfmadd231ps %ymm4,%ymm0,%ymm{}"
    clean = ["vbroadcastss (%rdx),%ymm0"] + [fma.format(r) for r in range(5, 13)]
    spilled = clean + ["vfmadd213ps -0xef0(%rbp),%ymm1,%ymm0", "vmovaps %ymm0,-0xef0(%rbp)"]
    text, address = [], 0x1000

    def emit(lines):
        nonlocal address
        first = address
        for line in lines:
            text.append(f"  {address:x}:\t{line}")
            address += 4
        return first

    outer = emit(["mov %rax,%rbx"])
    top = emit(clean)
    emit([f"jne    {top:x} <f+0x0>"])
    top = emit(spilled)
    emit([f"jne    {top:x} <f+0x0>"])
    top = emit(clean + ["vcmpltps %ymm6,%ymm3,%ymm1", "vmovaps -0x58(%rsp),%ymm4"])
    emit([f"jne    {top:x} <f+0x0>"])
    emit([f"jne    {outer:x} <f+0x0>"])
    loops = tile_loops("\n".join(text))
    assert [(width, fmas, len(stack)) for _, width, fmas, stack in loops] == [
        ("ymm", 8, 0), ("ymm", 9, 2)]


# The vector registers of each x86 instruction set's build that the module holds.
WIDTHS = {isa: width for isa, width in (("avx2", "ymm"), ("avx512", "zmm"))
          if isa in _cpu.compiled_isas()}


@pytest.mark.skipif(OBJDUMP is None, reason="objdump not found")
@pytest.mark.skipif(not WIDTHS, reason="no AVX2 or AVX-512 build in this module (not x86-64)")
def test_tile_loops_keep_their_accumulators_in_registers():
    done = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", _cpu.__file__],
                          capture_output=True, text=True, check=True)
    loops = tile_loops(done.stdout)
    assert {width for _, width, _, _ in loops} == set(WIDTHS.values()), "a build's tiles not found"
    spilling = [loop for loop in loops if loop[3]]
    assert not spilling, f"{len(spilling)} of {len(loops)} tile loops use the stack: {spilling[:3]}"
