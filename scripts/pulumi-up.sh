#!/usr/bin/env bash
# Every `make` target that runs Pulumi comes here, so each one reaches the stack's backend with
# its passphrase:   scripts/pulumi-up.sh STACK ACTION [ARGS...]   (actions: see the case at the end)
#
# Backends: `local` keeps its state in this checkout (.pulumi-local/state, a file backend): a
# laptop sandbox needs no account. `dev` and `prod` are shared, so they keep theirs where CI
# does (.github/workflows/deploy.yml): Pulumi Cloud, or the backend PULUMI_BACKEND_URL names.
#
# `up` runs `make doctor` first (tools/doctor.py: every missing prerequisite at once), then walks
# the steps below in order. Each says what it does, and skips what is already done, so a second
# run goes straight to `pulumi up`. Only `local` creates things for you (a Pulumi CLI, a kind
# cluster with its registry, a passphrase, a throwaway wallet); dev and prod stop and say what to
# set. Every stack deploys to the kubeconfig context its stack file pins (kubernetes:context).
set -Eeuo pipefail

# The Pulumi CLI installed when none is on the PATH: the Python SDK's version in
# requirements.txt (the CLI should not be older than the SDK; README, "What you need").
PULUMI_VERSION=3.272.0
PROJECT=x402-bundler
# kind's documented local registry (https://kind.sigs.k8s.io/docs/user/local-registry/).
REGISTRY_NAME=kind-registry
REGISTRY_PORT=5001
REGISTRY_IMAGE=registry:3

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Git-ignored: the installed CLI, the local passphrase, the builder config and local state.
local_dir="${X402_LOCAL_DIR:-$root/.pulumi-local}"

usage="usage: pulumi-up.sh STACK up|preview|destroy|check|init|config|pulumi|env [ARGS...]"
stack="${1:?$usage}"
action="${2:-up}"
shift $(($# < 2 ? $# : 2))
cluster="$PROJECT-$stack"
# CI names the shared stacks org/project/stack; PULUMI_ORG picks the same org here.
stack_ref="$stack"
if [[ $stack != local && -n ${PULUMI_ORG:-} ]]; then stack_ref="$PULUMI_ORG/$PROJECT/$stack"; fi
# The context the stack file pins (the program's Kubernetes provider deploys there, whatever
# kubectl's current context is).
kube_context="$(sed -n 's/^ *kubernetes:context: *//p' "$root/Pulumi.$stack.yaml" 2>/dev/null | tr -d "\"'" || true)"

say() { printf '==> %s\n' "$*"; }
skip() { printf '    %s\n' "$*"; }
stop() {
  printf 'make %s STACK=%s: %s\n' "$action" "$stack" "$1" >&2
  shift
  local line
  for line in "$@"; do printf '  %s\n' "$line" >&2; done
  exit 1
}
# A step that fails without its own message still ends in one, naming the command.
on_error() {
  stop "a step failed: \`$2\` (exit $1, scripts/pulumi-up.sh line $3)." \
    "Its output is above. make doctor STACK=$stack checks every prerequisite at once."
}
trap 'on_error $? "$BASH_COMMAND" $LINENO' ERR
is_local() { [[ $stack == local ]]; }
# Which stacks build an image here (and so need Docker): the stack file's imageMode.
builds_image() { ! grep -Eq "^ *$PROJECT:imageMode: *promote" "$root/Pulumi.$stack.yaml"; }

check_stack_file() {
  [[ -f "$root/Pulumi.$stack.yaml" ]] ||
    stop "there is no Pulumi.$stack.yaml." "Stacks of this project: local (a laptop sandbox), dev, prod."
}

# -- the Pulumi CLI --------------------------------------------------------------------------

version_at_least() { # $1 >= $2, both x.y.z
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

ensure_pulumi() {
  say "Pulumi CLI"
  if ! command -v pulumi >/dev/null 2>&1 && [[ -x "$local_dir/pulumi/bin/pulumi" ]]; then
    PATH="$local_dir/pulumi/bin:$PATH"
  fi
  if command -v pulumi >/dev/null 2>&1; then
    local found
    found="$(pulumi version 2>/dev/null | sed 's/^v//')"
    version_at_least "$found" "$PULUMI_VERSION" ||
      stop "pulumi $found is older than $PULUMI_VERSION, the version this project is tested with." \
        "Upgrade it (https://www.pulumi.com/docs/install/), or take it off the PATH and make up installs $PULUMI_VERSION into .pulumi-local/."
    skip "pulumi $found ($(command -v pulumi))"
    return
  fi
  command -v curl >/dev/null 2>&1 ||
    stop "no pulumi on the PATH, and no curl to install it with." \
      "Install curl, or Pulumi $PULUMI_VERSION yourself: https://www.pulumi.com/docs/install/"
  skip "no pulumi on the PATH: installing $PULUMI_VERSION into .pulumi-local/pulumi with Pulumi's installer"
  mkdir -p "$local_dir"
  local installer="$local_dir/install-pulumi.sh" said
  if ! said="$(curl -fsSL https://get.pulumi.com -o "$installer" 2>&1)"; then
    stop "cannot download Pulumi's installer from get.pulumi.com: ${said:-curl failed}" \
      "Without network to get.pulumi.com, install Pulumi $PULUMI_VERSION or newer yourself (https://www.pulumi.com/docs/install/) and put it on the PATH."
  fi
  sh "$installer" --version "$PULUMI_VERSION" --install-root "$local_dir/pulumi" --no-edit-path ||
    stop "Pulumi's installer failed (its output is above)." "Install Pulumi $PULUMI_VERSION yourself: https://www.pulumi.com/docs/install/"
  rm -f "$installer"
  [[ -x "$local_dir/pulumi/bin/pulumi" ]] ||
    stop "Pulumi's installer did not leave $local_dir/pulumi/bin/pulumi." "Install it yourself: https://www.pulumi.com/docs/install/"
  PATH="$local_dir/pulumi/bin:$PATH"
  skip "installed: $(pulumi version)"
}

# -- Docker and buildx -----------------------------------------------------------------------

ensure_docker() {
  say "Docker and buildx (this stack builds its image here)"
  command -v docker >/dev/null 2>&1 ||
    stop "Docker is not installed; this stack builds its image with it${1:+ and runs kind in it}." \
      "Install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop, with the buildx plugin."
  docker info >/dev/null 2>&1 ||
    stop "Docker is installed but its daemon does not answer (docker info failed)." \
      "Start Docker (Docker Desktop, or: sudo systemctl start docker), and check you may use it (the docker group)."
  local buildx
  buildx="$(docker buildx version 2>/dev/null)" ||
    stop "Docker's buildx plugin is missing; the image is built with it." \
      "Install it: https://docs.docker.com/build/install-buildx/ (Debian/Ubuntu: the docker-buildx-plugin package)."
  skip "$buildx"
}

# -- the cluster -----------------------------------------------------------------------------

cluster_answers() { kubectl "$@" version --request-timeout=5s >/dev/null 2>&1; }

ensure_registry() {
  if [[ "$(docker inspect -f '{{.State.Running}}' "$REGISTRY_NAME" 2>/dev/null || true)" == true ]]; then
    skip "registry $REGISTRY_NAME is running (localhost:$REGISTRY_PORT)"
    return
  fi
  skip "starting registry $REGISTRY_NAME on localhost:$REGISTRY_PORT"
  docker run -d --restart=always -p "127.0.0.1:$REGISTRY_PORT:5000" --network bridge \
    --name "$REGISTRY_NAME" "$REGISTRY_IMAGE" >/dev/null
}

create_kind_cluster() {
  skip "creating kind cluster $cluster (containerd reads registry hosts from /etc/containerd/certs.d)"
  kind create cluster --name "$cluster" --config=- <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
EOF
}

# The nodes pull localhost:5001/... from the registry container: localhost inside a node is the
# node itself, so containerd is told where that name really is.
connect_registry() {
  local node dir="/etc/containerd/certs.d/localhost:$REGISTRY_PORT"
  for node in $(kind get nodes --name "$cluster"); do
    if docker exec "$node" test -f "$dir/hosts.toml" 2>/dev/null; then
      continue
    fi
    skip "node $node: localhost:$REGISTRY_PORT -> http://$REGISTRY_NAME:5000"
    docker exec "$node" mkdir -p "$dir"
    printf '[host."http://%s:5000"]\n' "$REGISTRY_NAME" | docker exec -i "$node" cp /dev/stdin "$dir/hosts.toml"
  done
  if [[ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY_NAME")" == null ]]; then
    skip "connecting $REGISTRY_NAME to the kind network"
    docker network connect kind "$REGISTRY_NAME"
  fi
  # Tells tools which registry this cluster reads (KEP-1755); apply is idempotent.
  kubectl --context "$kube_context" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:$REGISTRY_PORT"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
EOF
}

ensure_cluster() {
  command -v kubectl >/dev/null 2>&1 ||
    stop "kubectl is not installed; it checks the cluster and reaches the API afterwards." \
      "Install kubectl 1.29 or newer: https://kubernetes.io/docs/tasks/tools/"
  [[ -n $kube_context ]] ||
    stop "Pulumi.$stack.yaml pins no kubernetes:context: up would deploy to whatever cluster kubectl points at." \
      "Set kubernetes:context in Pulumi.$stack.yaml to the $stack cluster's context (kubectl config get-contexts -o name)."
  if ! is_local; then
    say "Cluster: context $kube_context (pinned by Pulumi.$stack.yaml; kubectl's current context is $(kubectl config current-context 2>/dev/null || echo none))"
    cluster_answers --context "$kube_context" ||
      stop "no Kubernetes cluster answers for context $kube_context, which Pulumi.$stack.yaml pins." \
        "Point KUBECONFIG at the $stack cluster's kubeconfig, or correct kubernetes:context; offline review: make render STACK=$stack"
    skip "context $kube_context answers"
    return
  fi
  say "Cluster: kind $cluster (context $kube_context) with the registry localhost:$REGISTRY_PORT"
  if cluster_answers --context "$kube_context"; then
    skip "context $kube_context answers"
    ensure_registry
  else
    command -v kind >/dev/null 2>&1 ||
      stop "no cluster answers for context $kube_context, and kind is not installed to create one." \
        "Install kind v0.27 or newer (https://kind.sigs.k8s.io/docs/user/quick-start/#installation), then run make up again."
    if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
      stop "kind cluster $cluster exists but does not answer for context $kube_context." \
        "Start its node container (docker start $cluster-control-plane), or delete it: kind delete cluster --name $cluster"
    fi
    ensure_registry
    create_kind_cluster
  fi
  connect_registry
}

# The local stack pushes over plain HTTP to localhost:5001. BuildKit runs in its own container,
# so the builder shares the host's network and is told that registry speaks HTTP.
ensure_builder() {
  local builder platforms arch
  builder="$(sed -n "s/^ *$PROJECT:imageBuilder: *//p" "$root/Pulumi.$stack.yaml")"
  [[ -n $builder ]] || return 0
  say "buildx builder $builder (reaches localhost:$REGISTRY_PORT over HTTP)"
  if docker buildx inspect "$builder" >/dev/null 2>&1; then
    skip "builder $builder exists"
  else
    mkdir -p "$local_dir"
    printf '[registry."localhost:%s"]\n  http = true\n' "$REGISTRY_PORT" >"$local_dir/buildkitd.toml"
    docker buildx create --name "$builder" --driver docker-container --driver-opt network=host \
      --buildkitd-config "$local_dir/buildkitd.toml" >/dev/null
    skip "created builder $builder"
  fi
  platforms="$(grep -A3 'imagePlatforms:' "$root/Pulumi.$stack.yaml")"
  arch="$(docker info --format '{{.Architecture}}' 2>/dev/null || true)"
  if [[ $arch =~ ^(aarch64|arm64)$ ]] && ! grep -q 'linux/arm64' <<<"$platforms"; then
    skip "WARNING: this Docker runs on arm64, but the stack builds linux/amd64, which kind here cannot run natively."
    skip "  Build for this machine: make config STACK=$stack ARGS=\"set --path '$PROJECT:imagePlatforms[0]' linux/arm64\""
  fi
}

# -- backend, passphrase, stack, wallet ------------------------------------------------------

use_backend() {
  if is_local; then
    mkdir -p "$local_dir/state"
    export PULUMI_BACKEND_URL="file://$local_dir/state"
  elif [[ -z ${PULUMI_BACKEND_URL:-} ]] && ! pulumi whoami </dev/null >/dev/null 2>&1; then
    stop "$stack is shared: its state lives in Pulumi Cloud, as CI keeps it, and you are not logged in." \
      "Run: pulumi login   (or set PULUMI_ACCESS_TOKEN; or PULUMI_BACKEND_URL for your team's own backend)"
  fi
}

ensure_passphrase() {
  say "Passphrase (encrypts this stack's secrets)"
  if [[ -n ${PULUMI_CONFIG_PASSPHRASE:-} || -n ${PULUMI_CONFIG_PASSPHRASE_FILE:-} ]]; then
    skip "taken from PULUMI_CONFIG_PASSPHRASE${PULUMI_CONFIG_PASSPHRASE_FILE:+_FILE}"
    return
  fi
  is_local ||
    stop "PULUMI_CONFIG_PASSPHRASE is not set; $stack's secrets are encrypted with the team's passphrase." \
      "Set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) to the passphrase CI uses for $stack."
  export PULUMI_CONFIG_PASSPHRASE_FILE="$local_dir/passphrase"
  if [[ -s $PULUMI_CONFIG_PASSPHRASE_FILE ]]; then
    skip "using .pulumi-local/passphrase"
    return
  fi
  mkdir -p "$local_dir"
  (
    umask 077
    head -c 32 /dev/urandom | base64 | tr -d '\n' >"$PULUMI_CONFIG_PASSPHRASE_FILE"
  )
  skip "generated .pulumi-local/passphrase (git-ignored; without it the local stack's secrets cannot be read)"
}

ensure_stack() {
  say "Stack $stack ($(is_local && echo "file backend .pulumi-local/state" || echo "${PULUMI_BACKEND_URL:-your pulumi login}"))"
  if pulumi stack select "$stack_ref" >/dev/null 2>&1; then
    skip "stack $stack_ref exists"
  else
    pulumi stack init "$stack_ref" --secrets-provider passphrase
  fi
}

# A throwaway Arweave wallet: RSA 4096, exported by Node as a JWK, piped straight into the
# stack's encrypted config. It is never written to a file or printed.
generate_wallet() {
  node -e '
    const { generateKeyPairSync } = require("crypto");
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 4096, publicExponent: 65537 });
    process.stdout.write(JSON.stringify(privateKey.export({ format: "jwk" })));'
}

ensure_wallet() {
  say "Arweave wallet ($PROJECT:arweaveWallet)"
  if pulumi config get "$PROJECT:arweaveWallet" --stack "$stack_ref" >/dev/null 2>&1; then
    skip "set"
    return
  fi
  is_local ||
    stop "$PROJECT:arweaveWallet is not set; $stack signs bundles with the operator's funded wallet, never a generated one." \
      "Set it: make config STACK=$stack ARGS=\"set --secret $PROJECT:arweaveWallet\" < wallet.json"
  command -v node >/dev/null 2>&1 || stop "Node.js is needed to generate the local wallet." "Install Node.js 20."
  generate_wallet | pulumi config set --secret "$PROJECT:arweaveWallet" --stack "$stack_ref"
  skip "generated a throwaway 4096-bit wallet, kept only as a Pulumi secret of the local stack."
  skip "WARNING: it holds no AR and is for this local sandbox only. Uploads over the free limit cannot be"
  skip "bundled to Arweave with it; never fund it or reuse it elsewhere."
}

# -- after up --------------------------------------------------------------------------------

# The stack's outputs, read once (each `pulumi stack output` reads and decrypts the state again);
# load_outputs runs in the script's own shell, so the $(output ...) subshells see the result.
outputs=""
load_outputs() { outputs="$(pulumi stack output --json --stack "$stack_ref" 2>/dev/null)"; }
output() { # Node, already a prerequisite (the local wallet), parses the JSON: no jq needed
  node -e 'const v = JSON.parse(require("fs").readFileSync(0, "utf8"))[process.argv[1]];
    if (v === undefined || v === null) process.exit(1); console.log(v)' "$1" <<<"$outputs"
}

kubectl_args() {
  if [[ -n $kube_context ]]; then printf -- '--context %s ' "$kube_context"; fi
  printf -- '-n %s' "$(output namespace)"
}

print_access() {
  local api_port
  load_outputs || stop "pulumi up finished, but the stack's outputs cannot be read."
  api_port="$(output apiInternalUrl | sed 's/.*://')"
  say "Done"
  cat <<EOF
    API (once forwarded): $(output publicUrl)
    Forward it:           kubectl $(kubectl_args) port-forward svc/$(output apiServiceName) $api_port:$api_port
    Admin password:       make pulumi STACK=$stack ARGS="stack output adminPassword --show-secrets"
    Check it works:       make check STACK=$stack   (/health and the admin dashboard, through port-forwards)
EOF
}

# /health through a port-forward, then the admin dashboard with the password from the stack
# output (sent, never printed). The port-forwards are this script's own children.
# Global, not local to check(): the EXIT trap that kills the port-forwards runs after check()
# has returned, when its locals are gone.
forwards=()

# Starts `kubectl port-forward svc/$1 $2:$2` and returns once it says it forwards.
forward() {
  local said="$local_dir/port-forward-$1.log" pid
  mkdir -p "$local_dir"
  : >"$said"
  # shellcheck disable=SC2046 # kubectl_args is a word list by design
  kubectl $(kubectl_args) port-forward "svc/$1" "$2:$2" >"$said" 2>&1 &
  pid=$!
  forwards+=("$pid")
  for _ in {1..80}; do
    if grep -q '^Forwarding from' "$said"; then
      rm -f "$said"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  stop "kubectl port-forward svc/$1 did not start: $(cat "$said")" "Is the stack up? make up STACK=$stack"
}

check() {
  local ns api admin api_port admin_port user password quoted
  if ! load_outputs || ! ns="$(output namespace)"; then
    stop "stack $stack has no outputs yet." "Run make up STACK=$stack first."
  fi
  api="$(output apiServiceName)"
  admin="$(output adminServiceName)"
  api_port="$(output apiInternalUrl | sed 's/.*://')"
  admin_port="$(output adminInternalUrl | sed 's/.*://')"
  user="$(output adminUsername)"
  password="$(pulumi stack output adminPassword --show-secrets --stack "$stack_ref")"
  trap 'kill "${forwards[@]}" 2>/dev/null || true' EXIT
  forward "$api" "$api_port"
  forward "$admin" "$admin_port"
  local ok=0
  say "GET http://localhost:$api_port/health (svc/$api in $ns)"
  if curl -fsS --retry 10 --retry-connrefused --retry-delay 1 "http://localhost:$api_port/health"; then
    echo
  else
    ok=1
    skip "FAILED: the API does not answer; see kubectl $(kubectl_args) logs deploy/$api"
  fi
  say "GET http://localhost:$admin_port/admin/stats as $user, with the adminPassword output"
  # curl's config syntax: a " or \ in the password must be escaped inside the quoted value.
  quoted="$user:$password"
  quoted="${quoted//\\/\\\\}"
  quoted="${quoted//\"/\\\"}"
  if curl -fsS -o /dev/null --retry 10 --retry-connrefused --retry-delay 1 \
    -K - <<<"user = \"$quoted\"" "http://localhost:$admin_port/admin/stats"; then
    skip "200: the admin dashboard takes the password from the stack output"
  else
    ok=1
    skip "FAILED: the admin dashboard refused or did not answer"
  fi
  return "$ok"
}

# -- main ------------------------------------------------------------------------------------

case "$action" in
  env)
    # For a shell that runs bare `pulumi` commands (docs/setup.md, "Backends"): eval "$(make -s env)"
    check_stack_file
    if is_local; then
      printf 'export PULUMI_BACKEND_URL=%q\n' "file://$local_dir/state"
      [[ -n ${PULUMI_CONFIG_PASSPHRASE:-} || -n ${PULUMI_CONFIG_PASSPHRASE_FILE:-} ]] ||
        printf 'export PULUMI_CONFIG_PASSPHRASE_FILE=%q\n' "$local_dir/passphrase"
    fi
    if ! command -v pulumi >/dev/null 2>&1 && [[ -x "$local_dir/pulumi/bin/pulumi" ]]; then
      # shellcheck disable=SC2016 # $PATH is for the shell that evals this line
      printf 'export PATH=%q:"$PATH"\n' "$local_dir/pulumi/bin"
    fi
    printf 'pulumi stack select %q >/dev/null\n' "$stack_ref"
    exit 0
    ;;
  up | preview | destroy | check | init | config | pulumi) ;;
  *) stop "unknown action $action." "$usage" ;;
esac

check_stack_file
if [[ $action == up ]]; then
  say "Prerequisites (make doctor STACK=$stack)"
  (cd "$root" && "${X402_PYTHON:-$root/.venv/bin/python}" -m tools.doctor --stack "$stack") ||
    stop "the problems above stop make up: fix each, then run make up STACK=$stack again."
fi
ensure_pulumi
use_backend
if [[ $action == up ]]; then
  if builds_image; then ensure_docker "$(is_local && echo kind)"; fi
  ensure_cluster
  if is_local; then ensure_builder; fi
fi
ensure_passphrase
# The stack exists before anything sets its config (a fresh clone: init, then config, then up).
case "$action" in up | init | config | pulumi) ensure_stack ;; esac
if [[ $action == up ]]; then ensure_wallet; fi

case "$action" in
  up)
    say "pulumi up --stack $stack_ref"
    pulumi up --stack "$stack_ref" "$@"
    print_access
    ;;
  preview | destroy) pulumi "$action" --stack "$stack_ref" "$@" ;;
  config) pulumi config "$@" --stack "$stack_ref" ;;
  pulumi) pulumi "$@" --stack "$stack_ref" ;;
  check) check ;;
  init) ;;
esac
if [[ $action == destroy ]] && is_local; then
  skip "The kind cluster and registry stay; remove them with: kind delete cluster --name $cluster && docker rm -f $REGISTRY_NAME"
fi
