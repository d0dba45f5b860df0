"""bcrypt in pure Python, for the registry's htpasswd file in tests (OpenBSD bcrypt, Provos & Mazières 1999).

The registry accepts only bcrypt entries in htpasswd, and neither the standard library nor our dependencies
hash bcrypt portably (`crypt` is deprecated and platform-dependent; `htpasswd` needs apache2-utils), so the
tests hash with this. Blowfish's initial P-array and S-boxes are the fractional hex digits of pi, computed
here with Machin's formula rather than pasted as 1042 constants. Slow (pure Python) but only used at a low
cost factor on a handful of passwords.
"""

import functools
import os

_B64 = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_MAGIC = b"OrpheanBeholderScryDoubt"
_MASK = 0xFFFFFFFF


@functools.cache
def _pi_words() -> tuple[int, ...]:
    """The first 18 + 4*256 32-bit words of pi's fractional part: Blowfish's P-array, then its S-boxes."""
    bits = 1042 * 32 + 64  # guard bits absorb the truncation error of the series

    def arctan_inv(x: int) -> int:  # arctan(1/x) in fixed point with `bits` fractional bits
        one = 1 << bits
        total = term = one // x
        n, sign = 3, -1
        while term:
            term //= x * x
            total += sign * (term // n)
            n, sign = n + 2, -sign
        return total

    pi = 16 * arctan_inv(5) - 4 * arctan_inv(239)
    frac = (pi - (3 << bits)) >> 64
    return tuple((frac >> (32 * (1041 - i))) & _MASK for i in range(1042))


class _Blowfish:
    def __init__(self) -> None:
        words = _pi_words()
        self.p = list(words[:18])
        self.s = [list(words[18 + 256 * i : 18 + 256 * (i + 1)]) for i in range(4)]

    def encrypt(self, left: int, right: int) -> tuple[int, int]:
        p, s0, s1, s2, s3 = self.p, *self.s
        for i in range(16):
            left ^= p[i]
            f = ((s0[left >> 24] + s1[(left >> 16) & 0xFF]) & _MASK) ^ s2[(left >> 8) & 0xFF]
            right ^= (f + s3[left & 0xFF]) & _MASK
            left, right = right, left
        return right ^ p[17], left ^ p[16]

    def expand_key(self, key: bytes, salt: bytes | None) -> None:
        """Blowfish's key schedule; with a salt, bcrypt's salted variant (the salt is XORed in as it goes)."""
        key_words = _cycle_words(key)
        for i in range(18):
            self.p[i] ^= next(key_words)
        salt_words = _cycle_words(salt) if salt else None
        left = right = 0
        for box in [self.p, *self.s]:
            for i in range(0, len(box), 2):
                if salt_words:
                    left ^= next(salt_words)
                    right ^= next(salt_words)
                left, right = self.encrypt(left, right)
                box[i], box[i + 1] = left, right


def _cycle_words(data: bytes):
    """Big-endian 32-bit words read cyclically from `data` (the key stream of Blowfish's schedule)."""
    pos = 0
    while True:
        word = 0
        for _ in range(4):
            word = (word << 8) | data[pos]
            pos = (pos + 1) % len(data)
        yield word


def _encode(data: bytes) -> str:
    """bcrypt's base64: its own alphabet, no padding."""
    out = []
    for i in range(0, len(data), 3):
        chunk = data[i : i + 3]
        n = int.from_bytes(chunk.ljust(3, b"\0"), "big")
        out.append("".join(_B64[(n >> shift) & 63] for shift in (18, 12, 6, 0))[: len(chunk) + 1])
    return "".join(out)


def _decode(text: str) -> bytes:
    out = bytearray()
    for i in range(0, len(text), 4):
        chunk = text[i : i + 4]
        n = 0
        for ch in chunk.ljust(4, "."):
            n = (n << 6) | _B64.index(ch)
        out += n.to_bytes(3, "big")[: len(chunk) - 1]
    return bytes(out)


def hashpw(password: str, cost: int = 4, salt: bytes | None = None) -> str:
    """`$2y$<cost>$<salt><hash>` for `password`, as htpasswd -B writes it (cost 4..31)."""
    if not 4 <= cost <= 31:
        raise ValueError(f"bcrypt cost {cost} outside 4..31")
    salt = os.urandom(16) if salt is None else salt
    key = (password.encode() + b"\0")[:72]
    state = _Blowfish()
    state.expand_key(key, salt)
    for _ in range(1 << cost):
        state.expand_key(key, None)
        state.expand_key(salt, None)
    words = [int.from_bytes(_MAGIC[i : i + 4], "big") for i in range(0, 24, 4)]
    for _ in range(64):
        for i in range(0, 6, 2):
            words[i], words[i + 1] = state.encrypt(words[i], words[i + 1])
    digest = b"".join(w.to_bytes(4, "big") for w in words)[:23]
    return f"$2y${cost:02d}${_encode(salt)}{_encode(digest)}"


def checkpw(password: str, hashed: str) -> bool:
    """Whether `hashed` (a `$2a$`/`$2b$`/`$2y$` entry) is the bcrypt of `password`."""
    _, _, cost, rest = hashed.split("$")
    return hashpw(password, int(cost), _decode(rest[:22]))[7:] == hashed[7:]
