#!/usr/bin/env bash
# Creates an image pull secret for the connected registry in a namespace, as ACR's docs and the
# community write-ups do with `kubectl create secret docker-registry`.
#
# Usage: pull-secret.sh NAMESPACE [SECRET_NAME]
#   With TOKEN_USER and TOKEN_PASSWORD set: uses that client token (an ACR client token added with
#   `az acr connected-registry update --add-client-tokens`, which the registry learns at its
#   next sync). Without them: creates a pull-only token `kubelet` inside the running registry
#   (`connected-registry token create`, run in its pod) and uses its first password.
#   REGISTRY_NAMESPACE (default connected-registry) is where the registry runs; SCHEME=http for
#   the http and k3s overlays (default https).
set -euo pipefail

ns=${1:?usage: pull-secret.sh NAMESPACE [SECRET_NAME]}
secret=${2:-connected-registry-pull}
reg_ns=${REGISTRY_NAMESPACE:-connected-registry}
scheme=${SCHEME:-https}

ip=$(kubectl -n "$reg_ns" get service connected-registry -o jsonpath='{.spec.clusterIP}')
port=$(kubectl -n "$reg_ns" get service connected-registry -o jsonpath='{.spec.ports[0].port}')
server="$ip:$port"

if [[ -z ${TOKEN_USER:-} || -z ${TOKEN_PASSWORD:-} ]]; then
  # The image is FROM scratch: exec runs the registry binary itself, as the registry's user, on
  # its data directory (ACR_REGISTRY_DATA_VOLUME); the running server applies it within seconds.
  run() { kubectl -n "$reg_ns" exec deploy/connected-registry -c connected-registry -- /connected-registry "$@"; }
  run scope-map show --name site-pull >/dev/null 2>&1 ||
    run scope-map create --name site-pull --repository '*' content/read metadata/read \
      --description "pull everything (kubelets)" >/dev/null
  json=$(run token create --name kubelet --scope-map site-pull)
  TOKEN_USER=kubelet
  TOKEN_PASSWORD=$(printf '%s' "$json" | sed -n 's/.*"passwords":\[{"name":"password1","value":"\([^"]*\)".*/\1/p')
  [[ -n $TOKEN_PASSWORD ]] || { echo "no password in: token create output" >&2; exit 1; }
fi

kubectl -n "$ns" delete secret "$secret" --ignore-not-found
kubectl -n "$ns" create secret docker-registry "$secret" \
  --docker-server="$server" --docker-username="$TOKEN_USER" --docker-password="$TOKEN_PASSWORD"
echo "created $ns/$secret for $scheme://$server: pull images as $server/<repository>:<tag>"
