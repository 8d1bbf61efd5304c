package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// root is where the deploy tree sits in the in-memory file system that
// kustomize renders from.
const root = "/deploy"

// checkDir holds the overlays the test writes to render each component on
// top of the base.
const checkDir = root + "/.check"

// wantKustomizations are the kustomizations and components that must exist:
// removing or renaming one is a change to notice, not a silently smaller
// test.
var wantKustomizations = []string{"base", "components/xds-mtls", "components/xds-tls", "overlays/demo"}

// kustomization is one directory with a kustomization.yaml.
type kustomization struct {
	Dir       string // relative to the deploy directory
	Component bool
}

// deployFS copies the deploy directory's YAML files into an in-memory
// file system at root and lists its kustomizations.
func deployFS(t *testing.T) (filesys.FileSystem, []kustomization) {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	var ks []kustomization
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && p != "." {
				return filepath.SkipDir
			}
			return nil
		}
		// Kustomize reads only YAML here (resources, patches and generator
		// files); the rest (Go, Dockerfile, systemd units) stays out.
		if ext := filepath.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := mem.WriteFile(path.Join(root, filepath.ToSlash(p)), b); err != nil {
			return err
		}
		if d.Name() == "kustomization.yaml" {
			var head struct{ Kind string }
			if err := yaml.Unmarshal(b, &head); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			ks = append(ks, kustomization{Dir: filepath.ToSlash(filepath.Dir(p)), Component: head.Kind == "Component"})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].Dir < ks[j].Dir })
	var dirs []string
	for _, k := range ks {
		dirs = append(dirs, k.Dir)
	}
	if strings.Join(dirs, " ") != strings.Join(wantKustomizations, " ") {
		t.Fatalf("kustomizations = %v, want %v (update wantKustomizations with the new layout)", dirs, wantKustomizations)
	}
	return mem, ks
}

// renderPath is where kustomize runs for k: the directory itself, or for a
// component an overlay of the base that uses it.
func renderPath(t *testing.T, mem filesys.FileSystem, k kustomization) string {
	t.Helper()
	if !k.Component {
		return path.Join(root, k.Dir)
	}
	dir := path.Join(checkDir, strings.ReplaceAll(k.Dir, "/", "-"))
	overlay := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\ncomponents:\n  - ../../%s\n", k.Dir)
	if err := mem.WriteFile(path.Join(dir, "kustomization.yaml"), []byte(overlay)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rendered is the output of one kustomization, decoded into typed objects
// keyed by "namespace/name".
type rendered struct {
	Name            string
	Namespaces      map[string]*corev1.Namespace
	ServiceAccounts map[string]*corev1.ServiceAccount
	ConfigMaps      map[string]*corev1.ConfigMap
	Secrets         map[string]*corev1.Secret
	Services        map[string]*corev1.Service
	Deployments     map[string]*appsv1.Deployment
	StatefulSets    map[string]*appsv1.StatefulSet
	PDBs            map[string]*policyv1.PodDisruptionBudget
	// Objects lists every object as "Kind namespace/name", in render order.
	Objects []string
}

// codecs decode the kinds the manifests may use. Strict: unknown and
// duplicate fields are errors, as `kubectl apply --validate=strict` makes
// them.
func codecs(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// render runs kustomize on dir and decodes every object strictly.
func render(t *testing.T, mem filesys.FileSystem, dir, name string) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(mem, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", name, err)
	}
	r := &rendered{
		Name:       name,
		Namespaces: map[string]*corev1.Namespace{}, ServiceAccounts: map[string]*corev1.ServiceAccount{},
		ConfigMaps: map[string]*corev1.ConfigMap{}, Secrets: map[string]*corev1.Secret{},
		Services: map[string]*corev1.Service{}, Deployments: map[string]*appsv1.Deployment{},
		StatefulSets: map[string]*appsv1.StatefulSet{}, PDBs: map[string]*policyv1.PodDisruptionBudget{},
	}
	dec := codecs(t)
	for _, res := range m.Resources() {
		js, err := res.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %s: %v", name, res.CurId(), err)
		}
		obj, err := decodeStrict(dec, js)
		if err != nil {
			t.Errorf("%s: %s: %v", name, res.CurId(), err)
			continue
		}
		if err := r.add(obj); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	return r
}

// decodeStrict decodes one object; a strict-decoding problem (unknown or
// duplicate field) is an error like any other.
func decodeStrict(dec runtime.Decoder, data []byte) (runtime.Object, error) {
	obj, gvk, err := dec.Decode(data, nil, nil)
	if err != nil {
		return nil, err
	}
	if gvk == nil {
		return nil, fmt.Errorf("no kind")
	}
	return obj, nil
}

func (r *rendered) add(obj runtime.Object) error {
	var kind, id string
	var dup bool
	switch o := obj.(type) {
	case *corev1.Namespace:
		kind, id, dup = "Namespace", o.Name, put(r.Namespaces, o.Name, o)
	case *corev1.ServiceAccount:
		kind, id = "ServiceAccount", nsName(o.Namespace, o.Name)
		dup = put(r.ServiceAccounts, id, o)
	case *corev1.ConfigMap:
		kind, id = "ConfigMap", nsName(o.Namespace, o.Name)
		dup = put(r.ConfigMaps, id, o)
	case *corev1.Secret:
		kind, id = "Secret", nsName(o.Namespace, o.Name)
		dup = put(r.Secrets, id, o)
	case *corev1.Service:
		kind, id = "Service", nsName(o.Namespace, o.Name)
		dup = put(r.Services, id, o)
	case *appsv1.Deployment:
		kind, id = "Deployment", nsName(o.Namespace, o.Name)
		dup = put(r.Deployments, id, o)
	case *appsv1.StatefulSet:
		kind, id = "StatefulSet", nsName(o.Namespace, o.Name)
		dup = put(r.StatefulSets, id, o)
	case *policyv1.PodDisruptionBudget:
		kind, id = "PodDisruptionBudget", nsName(o.Namespace, o.Name)
		dup = put(r.PDBs, id, o)
	default:
		return fmt.Errorf("%T: a kind the checks do not know; add it to codecs and rendered", obj)
	}
	if dup {
		return fmt.Errorf("%s %s rendered twice", kind, id)
	}
	r.Objects = append(r.Objects, kind+" "+id)
	return nil
}

func nsName(ns, name string) string { return ns + "/" + name }

// put stores v under id and says whether id was already there.
func put[T any](m map[string]T, id string, v T) bool {
	_, dup := m[id]
	m[id] = v
	return dup
}

// renderAll renders every kustomization and component.
func renderAll(t *testing.T) []*rendered {
	t.Helper()
	mem, ks := deployFS(t)
	var out []*rendered
	for _, k := range ks {
		out = append(out, render(t, mem, renderPath(t, mem, k), k.Dir))
	}
	return out
}

func renderOne(t *testing.T, dir string) *rendered {
	t.Helper()
	for _, r := range renderAll(t) {
		if r.Name == dir {
			return r
		}
	}
	t.Fatalf("no kustomization %s", dir)
	return nil
}

// TestEveryKustomizationRendersAndDecodesStrictly renders base, overlays
// and components and decodes every object into its Kubernetes type, where
// an unknown or duplicate field fails.
func TestEveryKustomizationRendersAndDecodesStrictly(t *testing.T) {
	for _, r := range renderAll(t) {
		if len(r.Objects) == 0 {
			t.Errorf("%s renders nothing", r.Name)
		}
		t.Logf("%s: %d objects: %s", r.Name, len(r.Objects), strings.Join(r.Objects, ", "))
	}
}

// TestStrictDecodingRejectsUnknownFields: the decoder the checks rely on
// does fail on a misspelt field, at the top and deep inside a pod spec, and
// on a field given twice.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	dec := codecs(t)
	good := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":2,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i:1","readinessProbe":{"httpGet":{"path":"/readyz","port":1}}}]}}}}`
	if _, err := decodeStrict(dec, []byte(good)); err != nil {
		t.Fatalf("valid Deployment: %v", err)
	}
	for name, bad := range map[string]string{
		"top-level typo":  strings.Replace(good, `"replicas"`, `"replica"`, 1),
		"nested typo":     strings.Replace(good, `"httpGet":{"path"`, `"httpGet":{"pathh"`, 1),
		"duplicate field": strings.Replace(good, `"replicas":2`, `"replicas":2,"replicas":3`, 1),
		"wrong type":      strings.Replace(good, `"replicas":2`, `"replicas":"two"`, 1),
	} {
		if _, err := decodeStrict(dec, []byte(bad)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	yamlBad := []byte("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 80, targetport: 8080}]\n")
	js, err := yaml.YAMLToJSON(yamlBad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(dec, js); err == nil || !bytes.Contains([]byte(err.Error()), []byte("targetport")) {
		t.Errorf("Service with targetport: err = %v, want it to name the field", err)
	}
}
