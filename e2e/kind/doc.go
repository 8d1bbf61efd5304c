// Package kind is sluice's end-to-end suite on a Kubernetes cluster running
// the demo overlay (deploy/overlays/demo). Its tests carry the build tag
// "kind"; `make e2e-kind` (tools/e2e-kind.sh) creates a kind cluster from
// deploy/kind/kind-config.yaml, builds and loads the images, applies the
// overlay, runs them and deletes the cluster. Against a cluster of your own:
//
//	kubectl apply -k deploy/overlays/demo
//	go test -tags kind -count=1 -v ./e2e/kind/
//
// The tests reach the Envoy gateway, the demo pods (their sidecars' admin
// and inbound ports, and the application's failure knobs) and sluice's admin
// API with `kubectl port-forward` started from the test, so they need only
// kubectl and a kubeconfig, no host port mappings. Every wait has a deadline.
package kind
