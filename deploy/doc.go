// Package deploy holds sluice's deployment files (Dockerfile, kustomize base,
// components and overlays, kind config, systemd units) and, in its tests, the
// offline checks of them: every kustomization renders with kustomize as a Go
// library, every rendered object decodes strictly into its Kubernetes type,
// and the manifests agree with each other and with the sluice binary (config
// keys are flags, policies validate, Envoy bootstraps generate).
//
// It is a module of its own so that the Kubernetes dependency tree stays out
// of sluice's go.mod. Run it with `make deploy-check`.
package deploy
