"""``python -m bench provenance``: what the AI provenance marks cost per output.

Images of 1 MP and 12 MP (a real photo scaled up, so the encoders see real content) are encoded by ``encode_image``
as PNG, JPEG and WebP with the marks off, with the XMP marks, and with a signed C2PA manifest as well (a private test
CA made here). Off and on runs alternate, and the median of each is reported: their difference (``xmp_ms``) is
within the run-to-run noise of the encoders (``noise_ms``, the standard deviation), so ``xmp_fixed_us`` measures the
marks' own cost on an 8×8 picture. The C2PA cost is timed alone (signing the encoded bytes). For MP4, 720p clips
(a panning photo, which compresses well, and the same with film grain, a large file) are written by ``VideoWriter``
with the marks off and on; the marks' own cost (the XMP box appended after ``close``; the ``mdta`` tags are written
with the index) and C2PA signing of the finished file are timed alone.

``make_test_cert`` is also what tests/test_provenance.py signs with.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.media import provenance
from app.media.image import encode_image
from bench.report import table, write


def make_test_cert(folder: str | Path) -> tuple[Path, Path, Path]:
    """A private CA and an ES256 signing certificate it issued, fit for C2PA (end-entity, not self-signed, key usage
    digitalSignature, extended key usage emailProtection, subject and authority key ids). Writes ``cert.pem`` (the
    chain, signer first), ``key.pem`` (PKCS#8) and ``root.pem`` (the CA, a trust anchor for readers)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Face studio test")])

    def builder(subject: str, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (builder("Face studio test CA", name("Face studio test CA"), ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (builder("Face studio test signer", ca.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = folder / "cert.pem", folder / "key.pem", folder / "root.pem"
    paths[0].write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    paths[1].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths[2].write_bytes(ca.public_bytes(pem))
    return paths


def _photo(width: int, height: int) -> np.ndarray:
    """insightface's t1.jpg (a real group photo) scaled to the size, as BGR."""
    from testkit.standins import t1_path

    return cv2.resize(cv2.imread(t1_path()), (width, height), interpolation=cv2.INTER_CUBIC)


def _ms(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def fixed_cost_us(fmt: str, runs: int = 300) -> float:
    """The marks' own cost, free of the encoder's noise: encode_image of an 8×8 picture with and without them,
    alternating, median difference in microseconds."""
    tiny = np.zeros((8, 8, 3), np.uint8)
    diffs = []
    for _ in range(runs):
        provenance.configure(False)
        plain = _ms(lambda: encode_image(tiny, fmt))[0]
        provenance.configure(True)
        diffs.append(_ms(lambda: encode_image(tiny, fmt))[0] - plain)
    return float(np.median(diffs)) * 1000


def images(cert: tuple[Path, Path, Path], repeat: int) -> list[dict[str, Any]]:
    fixed = {fmt: fixed_cost_us(fmt) for fmt in ("png", "jpeg", "webp")}
    rows = []
    for label, (w, h) in (("1 MP", (1152, 864)), ("12 MP", (4000, 3000))):
        bgr = _photo(w, h)
        for fmt in ("png", "jpeg", "webp"):
            off, on = [], []
            for _ in range(repeat):  # alternate, so drift of a shared machine hits both alike
                provenance.configure(False)
                ms, plain = _ms(lambda: encode_image(bgr, fmt, 95)[0])  # noqa: B023
                off.append(ms)
                provenance.configure(True)
                ms, marked = _ms(lambda: encode_image(bgr, fmt, 95)[0])  # noqa: B023
                on.append(ms)
            provenance.configure(True, cert[0], cert[1])
            media_type = f"image/{fmt}"
            signs = []
            for _ in range(repeat):
                ms, signed = _ms(lambda: provenance.finish_image(marked, media_type))  # noqa: B023
                signs.append(ms)
            assert provenance.read_c2pa(signed, media_type, cert[2].read_bytes())["validation_state"] == "Trusted"
            provenance.configure(True)
            med_off, med_on = float(np.median(off)), float(np.median(on))
            rows.append({
                "output": f"{label} {fmt}", "encode_ms": f"{med_off:.1f}", "encode_marked_ms": f"{med_on:.1f}",
                "xmp_ms": f"{med_on - med_off:+.2f}", "noise_ms": f"{float(np.std(off)):.2f}",
                "xmp_fixed_us": f"{fixed[fmt]:.0f}",
                "xmp_bytes": len(marked) - len(plain), "c2pa_ms": f"{float(np.median(signs)):.1f}",
                "c2pa_bytes": len(signed) - len(marked), "output_kb": len(marked) // 1024,
            })
            print(rows[-1], flush=True)
    return rows


def video(cert: tuple[Path, Path, Path], seconds: float, repeat: int, work: Path, grain: bool) -> dict[str, Any]:
    """One 720p clip: the photo panning (compresses well), or with film grain (random noise: a large file, as a
    long or busy video would be), written with the marks off and on; then the marks and C2PA timed alone."""
    from app.media.writer import VideoWriter

    frame = _photo(1280, 720)
    frames = int(round(seconds * 25))
    rng = np.random.default_rng(0)
    grains = [rng.integers(0, 48, frame.shape, dtype=np.uint8) for _ in range(8)] if grain else []
    rows = []
    for marks in (False, True):
        provenance.configure(marks)
        path = work / f"clip-{grain}-{marks}.mp4"
        t0 = time.perf_counter()
        with VideoWriter(path, 25) as w:
            for i in range(frames):
                f = np.roll(frame, 4 * i, axis=1)
                w.write(cv2.add(f, grains[i % 8]) if grain else f)
            w.close()
        rows.append({"write_ms": (time.perf_counter() - t0) * 1000, "path": path})
    plain = rows[0]["path"]
    box, sign = [], []
    for i in range(repeat):
        copy = work / f"copy-{i}.mp4"
        shutil.copyfile(plain, copy)
        provenance.configure(True)
        box.append(_ms(lambda: provenance.finish_mp4(copy))[0])  # noqa: B023
        shutil.copyfile(plain, copy)
        provenance.configure(True, cert[0], cert[1])
        sign.append(_ms(lambda: provenance.finish_mp4(copy))[0])  # noqa: B023
    data = copy.read_bytes()
    assert provenance.read_c2pa(data, "video/mp4", cert[2].read_bytes())["validation_state"] == "Trusted"
    provenance.configure(True)
    size, marked = plain.stat().st_size, rows[1]["path"].stat().st_size
    row = {
        "output": f"MP4 720p {seconds:g} s{' grain' if grain else ''} ({frames} frames)",
        "write_ms": f"{rows[0]['write_ms']:.0f}", "write_marked_ms": f"{rows[1]['write_ms']:.0f}",
        "xmp_box_ms": f"{float(np.median(box)):.2f}", "marks_bytes": marked - size,
        "c2pa_ms": f"{float(np.median(sign)):.1f}", "c2pa_bytes": len(data) - marked, "output_mb": f"{size / 1e6:.1f}",
    }
    print(row, flush=True)
    return row


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-provenance-") as tmp:
        work = Path(tmp)
        cert = make_test_cert(work)
        img_rows = images(cert, args.repeat)
        vid_rows = [video(cert, args.seconds, args.repeat, work, grain) for grain in (False, True)]
    provenance.configure(True)
    img_cols = ["output", "output_kb", "encode_ms", "encode_marked_ms", "xmp_ms", "noise_ms", "xmp_fixed_us",
                "xmp_bytes", "c2pa_ms", "c2pa_bytes"]
    vid_cols = ["output", "output_mb", "write_ms", "write_marked_ms", "xmp_box_ms", "marks_bytes", "c2pa_ms",
                "c2pa_bytes"]
    print(table(img_rows, img_cols))
    print()
    print(table(vid_rows, vid_cols))
    path = write("provenance", {"repeat": args.repeat, "images": img_rows, "video": vid_rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    main(p.parse_args())

