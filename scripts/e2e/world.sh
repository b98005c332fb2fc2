# The "world" of scripts/e2e.sh (sourced): TLS servers in the netns
# $WORLD_NS, with a CA and keys this script makes, and their SPKI pins
# (computed with openssl, independently of pinproxy).
#   good.world.test   $WORLD_GOOD_IP:443   key A
#   other.world.test, bad.world.test, next.world.test
#                     $WORLD_OTHER_IP:443  key B (same CA)
#   direct.world.test $WORLD_PLAIN_IP:80   plain HTTP (transparent lock)
# shellcheck shell=bash

_world_leaf() {   # NAME SANS
  local d="$E2E_RUN/world" name="$1" sans="$2"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/$name.key" -out "$d/$name.csr" -subj "/CN=$name" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$sans" >"$d/$name.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
  cat "$d/$name.crt" "$d/ca.crt" >"$d/$name.chain.pem"
}

# spki_pin CERT: sha256/<base64 of SHA-256 of the DER SubjectPublicKeyInfo>.
spki_pin() {
  echo "sha256/$(openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)"
}

world_up() {
  local d="$E2E_RUN/world"
  mkdir -p "$d"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/ca.key" -out "$d/ca.crt" -days 2 -subj "/CN=pinproxy-e2e world CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  _world_leaf good "DNS:good.world.test"
  _world_leaf other "DNS:other.world.test,DNS:bad.world.test,DNS:next.world.test"
  PIN_A="$(spki_pin "$d/good.crt")"
  PIN_B="$(spki_pin "$d/other.crt")"
  log "world: good.world.test=$WORLD_GOOD_IP pin A $PIN_A; other/bad/next.world.test=$WORLD_OTHER_IP pin B $PIN_B"
  local py="$ROOT/scripts/e2e/world_server.py"
  start world-good ip netns exec "$WORLD_NS" python3 "$py" "$WORLD_GOOD_IP" 443 good "$d/good.chain.pem" "$d/good.key"
  start world-other ip netns exec "$WORLD_NS" python3 "$py" "$WORLD_OTHER_IP" 443 other "$d/other.chain.pem" "$d/other.key"
  start world-direct ip netns exec "$WORLD_NS" python3 "$py" "$WORLD_PLAIN_IP" 80 direct
  wait_for 20 "world servers" sh -c "curl -sf --cacert $d/ca.crt --resolve good.world.test:443:$WORLD_GOOD_IP https://good.world.test/ && curl -sf http://$WORLD_PLAIN_IP/"
}
