package model

import (
	"strings"
)

// TagFilter names a tag to delete; with a nil Value any value matches.
type TagFilter struct {
	Key   string
	Value *string
}

const maxTagsPerResource = 50

// resourceTags returns the tag map of any taggable resource.
func (r *Region) resourceTags(id string) (*Tags, error) {
	var t *Tags
	var notFound *APIError
	switch {
	case strings.HasPrefix(id, "eni-attach-"):
	case strings.HasPrefix(id, "eni-"):
		if e, ok := r.enis[id]; ok {
			t = &e.Tags
		}
		notFound = ErrENINotFound(id)
	case strings.HasPrefix(id, "i-"):
		if i, ok := r.insts[id]; ok {
			t = &i.Tags
		}
		notFound = ErrInstanceNotFound(id)
	case strings.HasPrefix(id, "subnet-"):
		if s, ok := r.subnets[id]; ok {
			t = &s.Tags
		}
		notFound = ErrSubnetNotFound(id)
	case strings.HasPrefix(id, "vpc-"):
		if v, ok := r.vpcs[id]; ok {
			t = &v.Tags
		}
		notFound = ErrVPCNotFound(id)
	case strings.HasPrefix(id, "sg-"):
		if g, ok := r.groups[id]; ok {
			t = &g.Tags
		}
		notFound = ErrGroupNotFound(id)
	case strings.HasPrefix(id, "trunk-assoc-"):
		if a, ok := r.trunks[id]; ok {
			t = &a.Tags
		}
		notFound = Errorf("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
	}
	if notFound == nil {
		return nil, Errorf("InvalidID", "The ID '%s' is not valid", id)
	}
	if t == nil {
		return nil, notFound
	}
	if *t == nil {
		*t = Tags{}
	}
	return t, nil
}

// ValidateTag refuses a tag EC2 would refuse: empty or long keys, long
// values, the reserved aws: prefix.
func ValidateTag(k, v string) error {
	switch {
	case k == "":
		return ErrInvalid("Tag key cannot be empty")
	case len(k) > 128:
		return ErrInvalid("Tag key exceeds the maximum length of 128 characters")
	case len(v) > 256:
		return ErrInvalid("Tag value exceeds the maximum length of 256 characters")
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return Errorf("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
	}
	return nil
}

// CreateTags adds or overwrites tags on resources; all or nothing.
func (r *Region) CreateTags(ids []string, tags Tags) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(ids) == 0 {
		return ErrMissing("ResourceId")
	}
	if len(tags) == 0 {
		return ErrMissing("Tag")
	}
	for k, v := range tags {
		if err := ValidateTag(k, v); err != nil {
			return err
		}
	}
	targets := make([]*Tags, 0, len(ids))
	for _, id := range ids {
		t, err := r.resourceTags(id)
		if err != nil {
			return err
		}
		n := len(*t)
		for k := range tags {
			if _, ok := (*t)[k]; !ok {
				n++
			}
		}
		if n > maxTagsPerResource {
			return Errorf("TagLimitExceeded", "The maximum number of tags (50) for resource '%s' has been exceeded.", id)
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		for k, v := range tags {
			(*t)[k] = v
		}
	}
	return nil
}

// DeleteTags removes tags: a filter without a value removes the key, with a
// value only if it matches; no filters removes every tag.
func (r *Region) DeleteTags(ids []string, filters []TagFilter) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(ids) == 0 {
		return ErrMissing("ResourceId")
	}
	targets := make([]*Tags, 0, len(ids))
	for _, id := range ids {
		t, err := r.resourceTags(id)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		if len(filters) == 0 {
			*t = Tags{}
			continue
		}
		for _, f := range filters {
			if v, ok := (*t)[f.Key]; ok && (f.Value == nil || *f.Value == v) {
				delete(*t, f.Key)
			}
		}
	}
	return nil
}
