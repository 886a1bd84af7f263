#!/usr/bin/env sh
# Make the secrets compose.yaml mounts: a CA, a server certificate for the name "server",
# and one random token per client (tokens.json for the server, one file per client).
# Usage (in deployments/compose/): ./make-secrets.sh [number of clients, default 3]
set -eu
cd "$(dirname "$0")"
n="${1:-3}"
mkdir -p secrets
cd secrets
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=fedcodec compose CA" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=server" -keyout server.key -out server.csr 2>/dev/null
printf "subjectAltName=DNS:server,DNS:localhost,IP:127.0.0.1\n" > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile san.ext -out server.crt 2>/dev/null
rm -f server.csr san.ext ca.srl
printf "{" > tokens.json
i=0
while [ "$i" -lt "$n" ]; do
    token="$(openssl rand -hex 32)"
    printf "%s" "$token" > "client-$i.token"
    [ "$i" -gt 0 ] && printf "," >> tokens.json
    printf '"client-%s": "%s"' "$i" "$token" >> tokens.json
    i=$((i + 1))
done
printf "}\n" >> tokens.json
# Compose bind-mounts file secrets with these permissions; the container user is uid 10001.
chmod 644 ./*
echo "wrote $(pwd): ca.crt, server.crt/.key, tokens.json, client-*.token"
