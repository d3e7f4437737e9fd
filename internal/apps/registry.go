package apps

import "errors"

// Registry finds apps by id and by key. It is immutable after NewRegistry and
// safe for concurrent use. The *App values it returns are shared: callers must
// not modify them.
type Registry struct {
	apps  []*App
	byID  map[string]*App
	byKey map[string]*App
}

// NewRegistry indexes apps, in order. It rejects nil apps, empty or
// URL-unsafe ids and keys, and duplicate ids or keys, reporting every problem
// (errors match ErrInvalid, duplicates ErrDuplicate too). It does not apply
// defaults or check limits; use (*Config).Validate for that.
func NewRegistry(apps []*App) (*Registry, error) {
	ids := map[string]string{}
	keys := map[string]string{}
	var errs []error
	for i, a := range apps {
		errs = append(errs, checkIdentity(i, a, ids, keys)...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r := &Registry{
		apps:  append([]*App(nil), apps...),
		byID:  make(map[string]*App, len(apps)),
		byKey: make(map[string]*App, len(apps)),
	}
	for _, a := range apps {
		r.byID[a.ID] = a
		r.byKey[a.Key] = a
	}
	return r, nil
}

// ByID returns the app with this id, or nil.
func (r *Registry) ByID(id string) *App { return r.byID[id] }

// ByKey returns the app with this key, or nil.
func (r *Registry) ByKey(key string) *App { return r.byKey[key] }

// All returns every app in construction order, in a new slice the caller may
// keep or reorder.
func (r *Registry) All() []*App { return append([]*App(nil), r.apps...) }
