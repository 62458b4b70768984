package manifest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Reader is a client.Reader over objects held in memory, such as the
// manifests of one input. Get and List answer as the API server would:
// NotFound for an object it does not hold, copies that callers may modify.
// It is safe for concurrent use.
type Reader struct {
	scheme *runtime.Scheme
	mu     sync.RWMutex
	objs   map[objectKey]client.Object
}

type objectKey struct {
	gvk schema.GroupVersionKind
	types.NamespacedName
}

var _ client.Reader = &Reader{}

// NewReader returns an empty reader of the types scheme knows.
func NewReader(scheme *runtime.Scheme) *Reader {
	return &Reader{scheme: scheme, objs: map[objectKey]client.Object{}}
}

// Add stores a copy of obj. It returns an AlreadyExists error when the
// reader already holds an object of that kind, namespace and name, and
// keeps the first.
func (r *Reader) Add(obj client.Object) error {
	gvk, err := apiutil.GVKForObject(obj, r.scheme)
	if err != nil {
		return err
	}
	key := objectKey{gvk, client.ObjectKeyFromObject(obj)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.objs[key]; ok {
		return apierrors.NewAlreadyExists(groupResource(gvk), key.NamespacedName.String())
	}
	stored := obj.DeepCopyObject().(client.Object)
	stored.GetObjectKind().SetGroupVersionKind(gvk)
	r.objs[key] = stored
	return nil
}

// Get copies the object named key into obj, of obj's kind.
func (r *Reader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	gvk, err := apiutil.GVKForObject(obj, r.scheme)
	if err != nil {
		return err
	}
	r.mu.RLock()
	stored, ok := r.objs[objectKey{gvk, key}]
	r.mu.RUnlock()
	if !ok {
		return apierrors.NewNotFound(groupResource(gvk), key.Name)
	}
	return copyInto(stored, obj)
}

// List copies the objects of list's item kind that match opts into list:
// by namespace, label selector, and field selectors on metadata.name and
// metadata.namespace. Limit and Continue are ignored: every match comes
// back in one page, ordered by namespace and name.
func (r *Reader) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	gvk, err := apiutil.GVKForObject(list, r.scheme)
	if err != nil {
		return err
	}
	kind, ok := strings.CutSuffix(gvk.Kind, "List")
	if !ok || kind == "" {
		return fmt.Errorf("%T is not a list: its kind %q does not end in List", list, gvk.Kind)
	}
	itemGVK := gvk.GroupVersion().WithKind(kind)
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	if lo.FieldSelector != nil {
		for _, req := range lo.FieldSelector.Requirements() {
			if req.Field != "metadata.name" && req.Field != "metadata.namespace" {
				return apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", req.Field))
			}
		}
	}
	r.mu.RLock()
	var keys []objectKey
	for k := range r.objs {
		if k.gvk == itemGVK && (lo.Namespace == "" || k.Namespace == lo.Namespace) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b objectKey) int { return strings.Compare(a.String(), b.String()) })
	items := make([]client.Object, 0, len(keys))
	for _, k := range keys {
		items = append(items, r.objs[k])
	}
	r.mu.RUnlock()

	matched := items[:0:0]
	for _, o := range items {
		if lo.LabelSelector != nil && !lo.LabelSelector.Matches(labels.Set(o.GetLabels())) {
			continue
		}
		if lo.FieldSelector != nil && !lo.FieldSelector.Matches(fields.Set{"metadata.name": o.GetName(), "metadata.namespace": o.GetNamespace()}) {
			continue
		}
		matched = append(matched, o)
	}
	data, err := json.Marshal(map[string]any{"apiVersion": gvk.GroupVersion().String(), "kind": gvk.Kind, "metadata": map[string]any{}, "items": matched})
	if err != nil {
		return fmt.Errorf("failed to encode the %s: %w", gvk.Kind, err)
	}
	return unmarshalInto(data, list)
}

// copyInto copies from into into, which may be the same type, an
// unstructured object or object metadata alone.
func copyInto(from client.Object, into runtime.Object) error {
	data, err := json.Marshal(from)
	if err != nil {
		return fmt.Errorf("failed to encode %s: %w", from.GetName(), err)
	}
	return unmarshalInto(data, into)
}

func unmarshalInto(data []byte, into runtime.Object) error {
	v := reflect.ValueOf(into)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("cannot read into %T: want a non-nil pointer", into)
	}
	v.Elem().SetZero()
	if err := json.Unmarshal(data, into); err != nil {
		return fmt.Errorf("failed to copy into %T: %w", into, err)
	}
	return nil
}

func groupResource(gvk schema.GroupVersionKind) schema.GroupResource {
	plural, _ := meta.UnsafeGuessKindToResource(gvk)
	return plural.GroupResource()
}
