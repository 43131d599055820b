"""A register read's answer decoded by the MBAP connection itself gives pymodbus's registers, on any PDU."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from drivers.modbus.errors import decode_errors
from drivers.modbus.mbap import Registers, _decode

PYMODBUS = {3: ReadHoldingRegistersResponse, 4: ReadInputRegistersResponse}


def pymodbus_registers(frame: bytes) -> list[int] | None:
    pdu = PYMODBUS[frame[0]]()
    try:
        pdu.decode(frame[1:])
    except decode_errors():
        return None
    return list(pdu.registers)


@settings(max_examples=2000, derandomize=True, database=None, deadline=None)
@given(
    fc=st.sampled_from([3, 4]),
    body=st.one_of(
        st.binary(max_size=260),  # anything, a byte count that does not fit included
        st.integers(0, 125).flatmap(
            lambda n: st.binary(min_size=2 * n, max_size=2 * n).map(lambda b: bytes([len(b)]) + b)
        ),
    ),
)
def test_registers_decoded_here_are_pymodbuss(fc: int, body: bytes) -> None:
    frame = bytes([fc]) + body
    got = _decode(frame, DecodePDU(is_server=False))
    want = pymodbus_registers(frame)
    if want is None:
        assert got is None
    else:
        assert isinstance(got, Registers) and got.function_code == fc and not got.isError()
        assert got.registers == want
