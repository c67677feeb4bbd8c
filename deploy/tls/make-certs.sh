#!/usr/bin/env bash
# Make a private CA and one certificate/key pair each for the Dask scheduler, the workers and
# the client (geoseg run), for TLS between them. For local and test clusters: in production,
# use your organisation's CA (or cert-manager on Kubernetes) and keep the CA key offline.
#
#   deploy/tls/make-certs.sh [OUT_DIR]        (default: deploy/tls/certs, which git ignores)
#
# Writes ca.pem, ca-key.pem and {scheduler,worker,client}.pem / {scheduler,worker,client}-key.pem.
# Dask checks that a peer's certificate is signed by ca.pem (mutual TLS); it does not check host
# names, but the certificates carry the usual ones (SAN) so other tools can.
#
# Environment:
#   DAYS=365          validity of the certificates
#   KEY_MODE=600      permissions of the private keys; the containers run as uid 10001, so for a
#                     local compose test either `chown 10001 OUT_DIR/*-key.pem` or use KEY_MODE=644
#   EXTRA_SANS=...    more subjectAltName entries for every certificate, e.g. "DNS:dask.example.org,IP:10.0.0.5"
#   FORCE=1           overwrite an existing CA in OUT_DIR (otherwise refused)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/certs}
days=${DAYS:-365}
key_mode=${KEY_MODE:-600}

command -v openssl >/dev/null || { echo "make-certs.sh: openssl is not installed" >&2; exit 1; }
if [ -e "$out/ca.pem" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "make-certs.sh: $out/ca.pem exists; set FORCE=1 to replace the CA and every certificate" >&2
  exit 1
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

# Names every component may be reached by: compose service, Kubernetes service, loopback.
sans="DNS:localhost,IP:127.0.0.1,DNS:scheduler,DNS:geoseg-scheduler"
[ -n "${EXTRA_SANS:-}" ] && sans="$sans,$EXTRA_SANS"

newkey() {  # ECDSA P-256: small, fast, accepted by Python's ssl module and Dask's TLS defaults
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

newkey "$out/ca-key.pem"
cat > "$work/ca.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = geoseg Dask CA
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
openssl req -new -x509 -key "$out/ca-key.pem" -days "$days" -sha256 \
  -config "$work/ca.cnf" -set_serial "0x$(openssl rand -hex 16)" -out "$out/ca.pem"

for role in scheduler worker client; do
  newkey "$out/$role-key.pem"
  openssl req -new -key "$out/$role-key.pem" -subj "/CN=geoseg-dask-$role" -out "$work/$role.csr"
  cat > "$work/$role.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $sans
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
EXT
  # Every Dask process is both a TLS server and a TLS client (workers talk to each other).
  openssl x509 -req -in "$work/$role.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 \
    -extfile "$work/$role.ext" -out "$out/$role.pem" 2>/dev/null
  openssl verify -CAfile "$out/ca.pem" "$out/$role.pem" >/dev/null
done

chmod 644 "$out"/ca.pem "$out"/scheduler.pem "$out"/worker.pem "$out"/client.pem
chmod "$key_mode" "$out"/scheduler-key.pem "$out"/worker-key.pem "$out"/client-key.pem
chmod 600 "$out/ca-key.pem"
echo "make-certs.sh: wrote CA and scheduler/worker/client certificates to $out" >&2
