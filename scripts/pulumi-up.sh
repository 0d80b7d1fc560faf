#!/usr/bin/env bash
# `make up` / `make preview`: local file backend inside the repo, passphrase secrets, the
# stack selected or created, then the Pulumi command. Stops early, saying what to install,
# when the CLI or a cluster is missing.
set -euo pipefail
stack="${1:?usage: pulumi-up.sh STACK up|preview}"
action="${2:-up}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! command -v pulumi >/dev/null 2>&1; then
  cat >&2 <<MSG
The pulumi CLI is not installed. Install it (https://www.pulumi.com/docs/install/), then
run 'make $action STACK=$stack' again. Without a CLI or cluster you can still review what
this stack would create:  make render STACK=$stack
MSG
  exit 1
fi

if command -v kubectl >/dev/null 2>&1; then
  if ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
    echo "No Kubernetes cluster answers for the current kubeconfig context ($(kubectl config current-context 2>/dev/null || echo none))." >&2
    echo "Start one (kind create cluster, k3d cluster create, minikube start) or set KUBECONFIG; offline review: make render STACK=$stack" >&2
    exit 1
  fi
elif [ ! -f "${KUBECONFIG:-$HOME/.kube/config}" ]; then
  echo "No kubeconfig found (${KUBECONFIG:-$HOME/.kube/config}). Create a cluster or set KUBECONFIG; offline review: make render STACK=$stack" >&2
  exit 1
fi

if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  echo "Set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE): it encrypts this stack's secrets." >&2
  exit 1
fi

mkdir -p .pulumi-state
export PULUMI_BACKEND_URL="file://$root/.pulumi-state"
pulumi stack select "$stack" --create --secrets-provider passphrase
pulumi "$action" --stack "$stack"
