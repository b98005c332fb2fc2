#!/usr/bin/env python3
"""bench/ct-pki.py PKI_DIR OUT_DIR: what the `ct` row of bench/run.sh needs.

Writes OUT_DIR/leaf-ct-chain.pem: a leaf for api.local (the bench leaf's key), issued by the bench
intermediate, carrying embedded SCTs from three CT logs of our own run by three operators (Chrome's
policy: 2 SCTs for a leaf of 90 days, 2 operators: it complies), and OUT_DIR/log_list.json: a v3 log
list naming those logs (usable), for pinproxy's --ct-log-list. The upstream on :8446 presents the
chain; pinproxy with `ct: enforce` verifies the three SCT signatures, pinproxy with `ct: off` does not.

RFC 6962's flow, as a CA and its logs do it: the CA signs a precertificate (critical poison
extension); each log signs the precertificate's TBSCertificate without the poison, with the issuer's
key hash (RFC 6962 section 3.2); the CA issues the final certificate with the SCT list extension
where the poison was. Uses python3-cryptography (Debian package, or PyPI).
"""
import base64
import datetime
import hashlib
import json
import struct
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def der_octet_string(b: bytes) -> bytes:
    n = len(b)
    if n < 0x80:
        head = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return b"\x04" + head + b


def main(pki: str, out: str) -> None:
    issuer = x509.load_pem_x509_certificate(open(f"{pki}/int.pem", "rb").read())
    issuer_key = serialization.load_pem_private_key(open(f"{pki}/int.key.pem", "rb").read(), None)
    leaf_key = serialization.load_pem_private_key(open(f"{pki}/leaf.key.pem", "rb").read(), None)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    serial = x509.random_serial_number()
    sig_hash = hashes.SHA256() if not isinstance(issuer_key, ec.EllipticCurvePrivateKey) or \
        issuer_key.curve.key_size <= 256 else hashes.SHA384()

    def builder():
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.local")]))
                .issuer_name(issuer.subject)
                .public_key(leaf_key.public_key())
                .serial_number(serial)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=89))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName("api.local"), x509.DNSName("localhost")]), critical=False))

    # What the logs sign is the TBS without the poison (precertificate) = the TBS without the SCT
    # list (final certificate): the two differ only in that last extension. cryptography's
    # tbs_precertificate_bytes strips the SCT list, so take it from a certificate with an empty one.
    placeholder = x509.UnrecognizedExtension(SCT_LIST_OID, der_octet_string(b"\x00\x00"))
    tbs = builder().add_extension(placeholder, critical=False).sign(
        issuer_key, sig_hash).tbs_precertificate_bytes
    key_hash = hashlib.sha256(issuer.public_key().public_bytes(DER, SPKI)).digest()
    ts = int((now - datetime.timedelta(hours=1)).timestamp() * 1000)
    usable = (now - datetime.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    scts, operators = [], []
    for i in range(3):
        log_key = ec.generate_private_key(ec.SECP256R1())
        spki = log_key.public_key().public_bytes(DER, SPKI)
        log_id = hashlib.sha256(spki).digest()
        # digitally-signed struct: version v1, signature_type certificate_timestamp, timestamp,
        # entry_type precert_entry, issuer_key_hash, TBS (24-bit length), no extensions.
        signed = (b"\x00\x00" + struct.pack(">Q", ts) + b"\x00\x01" + key_hash
                  + len(tbs).to_bytes(3, "big") + tbs + b"\x00\x00")
        sig = log_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        scts.append(b"\x00" + log_id + struct.pack(">Q", ts) + b"\x00\x00" + b"\x04\x03"
                    + struct.pack(">H", len(sig)) + sig)
        operators.append({"name": f"bench operator {i}", "email": [], "tiled_logs": [], "logs": [{
            "description": f"bench log {i}", "log_id": base64.b64encode(log_id).decode(),
            "key": base64.b64encode(spki).decode(), "url": f"https://log{i}.bench.test/",
            "mmd": 86400, "state": {"usable": {"timestamp": usable}}}]})
    body = b"".join(struct.pack(">H", len(s)) + s for s in scts)
    sct_list = struct.pack(">H", len(body)) + body
    final = builder().add_extension(
        x509.UnrecognizedExtension(SCT_LIST_OID, der_octet_string(sct_list)), critical=False
    ).sign(issuer_key, sig_hash)
    with open(f"{out}/leaf-ct-chain.pem", "wb") as f:
        f.write(final.public_bytes(serialization.Encoding.PEM))
        f.write(issuer.public_bytes(serialization.Encoding.PEM))
    with open(f"{out}/log_list.json", "w") as f:
        json.dump({"version": "bench", "log_list_timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "operators": operators}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
