// Package namedsecrets watches Secrets by name, one informer per name.
//
// RBAC can limit a ServiceAccount to named Secrets (resourceNames), but the
// API server authorises a list or a watch against such a rule only when
// the request selects one name with a metadata.name field selector. A
// controller-runtime cache selects at most one field set per namespace, so
// it cannot watch two named Secrets of one namespace without reading all
// of them. This package keeps one small cache per name instead: each lists
// and watches exactly one Secret, and together they give the reads and the
// change events of a cache of those Secrets alone.
package namedsecrets

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// Options wire a Cache.
type Options struct {
	// Scheme knows corev1.Secret.
	Scheme *runtime.Scheme
	// HTTPClient and Mapper are shared with a manager (GetHTTPClient,
	// GetRESTMapper); nil makes new ones.
	HTTPClient *http.Client
	Mapper     meta.RESTMapper
	// Secrets are the names to watch; a name given twice is watched once.
	Secrets []types.NamespacedName
}

// Cache reads and watches the Secrets it was made for, and no other. It is
// a client.Reader of those Secrets and a manager runnable that runs on
// every replica.
type Cache struct {
	keys   []types.NamespacedName
	caches map[types.NamespacedName]cache.Cache
}

var (
	_ client.Reader = (*Cache)(nil)
	_ interface {
		Start(context.Context) error
		NeedLeaderElection() bool
	} = (*Cache)(nil)
)

// New makes a cache for opts.Secrets; Start runs it.
func New(rc *rest.Config, opts Options) (*Cache, error) {
	if len(opts.Secrets) == 0 {
		return nil, fmt.Errorf("no secrets to watch")
	}
	if opts.HTTPClient == nil {
		var err error
		if opts.HTTPClient, err = rest.HTTPClientFor(rc); err != nil {
			return nil, fmt.Errorf("failed to build the HTTP client of the secret caches: %w", err)
		}
	}
	c := &Cache{caches: map[types.NamespacedName]cache.Cache{}}
	for _, key := range opts.Secrets {
		if key.Namespace == "" || key.Name == "" {
			return nil, fmt.Errorf("secret %q: both a namespace and a name are needed to watch a secret by name", key)
		}
		if _, ok := c.caches[key]; ok {
			continue
		}
		one, err := cache.New(rc, cache.Options{
			Scheme:     opts.Scheme,
			HTTPClient: opts.HTTPClient,
			Mapper:     opts.Mapper,
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}: {Namespaces: map[string]cache.Config{
					key.Namespace: {FieldSelector: fields.OneTermEqualSelector("metadata.name", key.Name)},
				}},
			},
			ReaderFailOnMissingInformer: true,
		})
		if err != nil {
			return nil, fmt.Errorf("failed to make the cache of secret %s: %w", key, err)
		}
		// The informer is made now, so that Start starts it and a Get
		// never makes one for another selection.
		if _, err := one.GetInformer(context.Background(), &corev1.Secret{}); err != nil {
			return nil, fmt.Errorf("failed to make the informer of secret %s: %w", key, err)
		}
		c.caches[key] = one
		c.keys = append(c.keys, key)
	}
	return c, nil
}

// Secrets are the watched names, in the order given.
func (c *Cache) Secrets() []types.NamespacedName { return slices.Clone(c.keys) }

// Get reads the watched Secret key into obj, a *corev1.Secret. A Secret
// that does not exist is a NotFound error; a name not watched is an error
// that says so, never a read of the API server.
func (c *Cache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); !ok {
		return fmt.Errorf("namedsecrets reads Secrets only, not %T", obj)
	}
	one, ok := c.caches[key]
	if !ok {
		return fmt.Errorf("secret %s is not one of the watched secrets %v: add it to the names this component watches (and to its Role's resourceNames)", key, c.keys)
	}
	return one.Get(ctx, key, obj, opts...)
}

// List is not offered: the cache holds named Secrets, read one by one.
func (c *Cache) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("namedsecrets does not list: get each of %v by name", c.keys)
}

// Start runs every informer until ctx ends.
func (c *Cache) Start(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, key := range c.keys {
		one := c.caches[key]
		g.Go(func() error {
			if err := one.Start(ctx); err != nil {
				return fmt.Errorf("cache of secret %s: %w", key, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// NeedLeaderElection is false: every replica reads its secrets.
func (*Cache) NeedLeaderElection() bool { return false }

// WaitForCacheSync waits until every informer has listed its Secret, and
// reports false when ctx ends first.
func (c *Cache) WaitForCacheSync(ctx context.Context) bool {
	for _, key := range c.keys {
		if !c.caches[key].WaitForCacheSync(ctx) {
			return false
		}
	}
	return true
}

// Sources return one controller source per watched Secret: each enqueues
// the Secret's own name when it is created, changed or deleted.
func (c *Cache) Sources() []source.TypedSource[reconcile.Request] {
	var out []source.TypedSource[reconcile.Request]
	for _, key := range c.keys {
		out = append(out, source.Kind(c.caches[key], &corev1.Secret{}, &handler.TypedEnqueueRequestForObject[*corev1.Secret]{}))
	}
	return out
}

// AddTo makes a Cache of secrets that shares mgr's configuration, HTTP
// client, scheme and REST mapper, and adds it to mgr, which starts it.
func AddTo(mgr manager.Manager, secrets []types.NamespacedName) (*Cache, error) {
	c, err := New(mgr.GetConfig(), Options{Scheme: mgr.GetScheme(), HTTPClient: mgr.GetHTTPClient(), Mapper: mgr.GetRESTMapper(), Secrets: secrets})
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(c); err != nil {
		return nil, fmt.Errorf("failed to add the caches of secrets %v: %w", secrets, err)
	}
	return c, nil
}

// Watch makes b reconcile each watched Secret when it changes.
func (c *Cache) Watch(b *builder.Builder) *builder.Builder {
	for _, src := range c.Sources() {
		b = b.WatchesRawSource(src)
	}
	return b
}

// Over returns a reader of Secrets from c and of every other type from
// other. A manager's client made over it (ctrl.Options.NewClient) reads
// the watched Secrets from their caches, refuses other Secrets, and reads
// the rest from the manager's cache.
func (c *Cache) Over(other client.Reader) client.Reader { return &over{named: c, other: other} }

type over struct {
	named *Cache
	other client.Reader
}

func (o *over) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		return o.named.Get(ctx, key, obj, opts...)
	}
	return o.other.Get(ctx, key, obj, opts...)
}

func (o *over) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*corev1.SecretList); ok {
		return o.named.List(ctx, list, opts...)
	}
	return o.other.List(ctx, list, opts...)
}
