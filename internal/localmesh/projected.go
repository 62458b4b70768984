package localmesh

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// projectedSync is how often a projected volume is read again while its
// process runs: the kubelet, too, keeps one current without a restart.
const projectedSync = time.Second

// errSourceMissing is a source the volume needs that does not exist yet:
// the kubelet would keep the pod in ContainerCreating until it does.
var errSourceMissing = errors.New("missing")

// projectedFiles returns the files of the projected volume src of a pod in
// namespace as the kubelet writes them, path to content:
//   - a secret source gives each key (or each of its items, at the item's
//     path); an optional secret that does not exist, or an optional item
//     whose key it lacks, gives nothing;
//   - a clusterTrustBundle source gives one file at its path: the
//     certificates of the bundle it names, or of every bundle of its
//     signer its label selector matches (no selector matches none), each
//     certificate once, in DER order (the kubelet shuffles that order
//     once per start); an optional source that finds none gives an empty
//     file, as the kubelet writes.
//
// Other sources are refused: a local process cannot be given them here.
func projectedFiles(ctx context.Context, c client.Reader, namespace string, src *corev1.ProjectedVolumeSource) (map[string][]byte, error) {
	files := map[string][]byte{}
	for i, s := range src.Sources {
		switch {
		case s.Secret != nil:
			if err := secretFiles(ctx, c, namespace, s.Secret, files); err != nil {
				return nil, fmt.Errorf("source %d: %w", i, err)
			}
		case s.ClusterTrustBundle != nil:
			bundle, err := clusterTrustBundleFile(ctx, c, s.ClusterTrustBundle)
			if err != nil {
				return nil, fmt.Errorf("source %d: %w", i, err)
			}
			files[s.ClusterTrustBundle.Path] = bundle
		default:
			return nil, fmt.Errorf("source %d is neither a secret nor a clusterTrustBundle, which a local process cannot be given", i)
		}
	}
	return files, nil
}

// secretFiles adds the files of a secret source to files.
func secretFiles(ctx context.Context, c client.Reader, namespace string, src *corev1.SecretProjection, files map[string][]byte) error {
	optional := src.Optional != nil && *src.Optional
	key := types.NamespacedName{Namespace: namespace, Name: src.Name}
	var sec corev1.Secret
	if err := c.Get(ctx, key, &sec); err != nil {
		switch {
		case apierrors.IsNotFound(err) && optional:
			return nil
		case apierrors.IsNotFound(err):
			return fmt.Errorf("secret %s: %w", key, errSourceMissing)
		}
		return fmt.Errorf("failed to read secret %s: %w", key, err)
	}
	if len(src.Items) == 0 {
		maps.Copy(files, sec.Data)
		return nil
	}
	for _, item := range src.Items {
		v, ok := sec.Data[item.Key]
		switch {
		case ok:
			files[item.Path] = v
		case !optional:
			return fmt.Errorf("secret %s has no key %s: %w", key, item.Key, errSourceMissing)
		}
	}
	return nil
}

// clusterTrustBundleFile returns the content of a clusterTrustBundle
// source's file.
func clusterTrustBundleFile(ctx context.Context, c client.Reader, src *corev1.ClusterTrustBundleProjection) ([]byte, error) {
	optional := src.Optional != nil && *src.Optional
	var bundles []certificatesv1.ClusterTrustBundle
	switch {
	case src.Name != nil:
		var ctb certificatesv1.ClusterTrustBundle
		err := c.Get(ctx, types.NamespacedName{Name: *src.Name}, &ctb)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("failed to read ClusterTrustBundle %s: %w", *src.Name, err)
		}
		if err == nil {
			bundles = append(bundles, ctb)
		}
	case src.SignerName != nil:
		var list certificatesv1.ClusterTrustBundleList
		if err := c.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("failed to list ClusterTrustBundles: %w", err)
		}
		var err error
		if bundles, err = selectBundles(list.Items, *src.SignerName, src.LabelSelector); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("a clusterTrustBundle source needs a name or a signerName")
	}
	if len(bundles) == 0 {
		if optional {
			return []byte{}, nil
		}
		return nil, fmt.Errorf("no ClusterTrustBundle matches %s: %w", describeBundleSource(src), errSourceMissing)
	}
	return mergeBundles(bundles)
}

// selectBundles returns the bundles of signer whose labels selector
// matches; a nil selector matches none, an empty one every bundle.
func selectBundles(all []certificatesv1.ClusterTrustBundle, signer string, selector *metav1.LabelSelector) ([]certificatesv1.ClusterTrustBundle, error) {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return nil, fmt.Errorf("clusterTrustBundle label selector: %w", err)
	}
	var out []certificatesv1.ClusterTrustBundle
	for _, b := range all {
		if b.Spec.SignerName == signer && sel.Matches(labels.Set(b.Labels)) {
			out = append(out, b)
		}
	}
	return out, nil
}

// mergeBundles returns the certificates of bundles as one PEM file: each
// certificate once, ordered by its DER.
func mergeBundles(bundles []certificatesv1.ClusterTrustBundle) ([]byte, error) {
	seen := map[string]bool{}
	for _, b := range bundles {
		rest := []byte(b.Spec.TrustBundle)
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("ClusterTrustBundle %s holds a PEM block of type %s, not CERTIFICATE", b.Name, block.Type)
			}
			seen[string(block.Bytes)] = true
		}
	}
	var out []byte
	for _, der := range slices.Sorted(maps.Keys(seen)) {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte(der)})...)
	}
	return out, nil
}

func describeBundleSource(src *corev1.ClusterTrustBundleProjection) string {
	if src.Name != nil {
		return "name " + *src.Name
	}
	sel, _ := metav1.LabelSelectorAsSelector(src.LabelSelector)
	return fmt.Sprintf("signer %s and labels %q", *src.SignerName, sel.String())
}

// projectedVolume is a projected volume written into a local folder.
type projectedVolume struct {
	c         client.Reader
	namespace string
	src       *corev1.ProjectedVolumeSource
	dir       string
	// written is what the folder holds, path to content.
	written map[string][]byte
}

// write reads the volume's sources and brings the folder to them: a file
// whose content changed is replaced at once (written beside the folder,
// then renamed into it, so that a reader sees the old file or the new one,
// as the kubelet's swap of its ..data link gives), a file no source gives
// any more is removed. On an error the folder is left as it was.
func (v *projectedVolume) write(ctx context.Context) error {
	files, err := projectedFiles(ctx, v.c, v.namespace, v.src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(v.dir, 0o700); err != nil {
		return err
	}
	for _, path := range slices.Sorted(maps.Keys(files)) {
		content := files[path]
		if old, ok := v.written[path]; ok && bytes.Equal(old, content) {
			continue
		}
		if err := replaceFile(v.dir, path, content); err != nil {
			return err
		}
		v.written[path] = content
	}
	for path := range v.written {
		if _, ok := files[path]; !ok {
			if err := os.Remove(filepath.Join(v.dir, path)); err != nil && !os.IsNotExist(err) {
				return err
			}
			delete(v.written, path)
		}
	}
	return nil
}

// replaceFile writes content to dir/path through a file beside dir and a
// rename, which replaces the file in one step.
func replaceFile(dir, path string, content []byte) error {
	to := filepath.Join(dir, path)
	if !filepath.IsLocal(path) {
		return fmt.Errorf("projected path %q leaves the volume", path)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dir), "."+filepath.Base(dir)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), to)
}

// writeProjected writes the projected volume of mnt into folder to, empty
// first as a new pod's volume is, waiting up to mountWait for sources the
// volume needs, as the kubelet would before it starts the container.
func writeProjected(ctx context.Context, c *testenv.Cluster, namespace string, mnt Mount, to string) (*projectedVolume, error) {
	if err := os.RemoveAll(to); err != nil {
		return nil, err
	}
	v := &projectedVolume{c: c.Client, namespace: namespace, src: mnt.Projected, dir: to, written: map[string][]byte{}}
	deadline := time.Now().Add(mountWait)
	for {
		err := v.write(ctx)
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, errSourceMissing) || time.Now().After(deadline) {
			return nil, fmt.Errorf("the projected volume it mounts at %s: %w", mnt.Path, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// syncProjected keeps the volumes current every projectedSync until p
// has exited. A pass that fails leaves the files as they were, as the
// kubelet keeps a volume it cannot update, and the next pass tries again.
func syncProjected(p *testenv.Process, volumes []*projectedVolume) {
	for {
		time.Sleep(projectedSync)
		if exited, _ := p.Exited(); exited {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, v := range volumes {
			_ = v.write(ctx)
		}
		cancel()
	}
}
