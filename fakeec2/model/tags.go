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

// taggable is one kind of taggable resource: its id prefix, where its tags
// are, and the error for an id of that kind that does not exist.
type taggable struct {
	prefix   string
	tags     func(r *Region, id string) *Tags
	notFound func(id string) *APIError
}

// tagsIn returns the tags of m[id], nil if there is no such resource.
func tagsIn[T any](m map[string]*T, id string, tags func(*T) *Tags) *Tags {
	if v, ok := m[id]; ok {
		return tags(v)
	}
	return nil
}

// taggables lists the taggable kinds; "eni-attach-" ids are not taggable
// and must not match "eni-".
var taggables = []taggable{
	{"eni-attach-", nil, nil},
	{"eni-", func(r *Region, id string) *Tags {
		return tagsIn(r.enis, id, func(e *eniState) *Tags { return &e.Tags })
	}, ErrENINotFound},
	{"i-", func(r *Region, id string) *Tags {
		return tagsIn(r.insts, id, func(i *Instance) *Tags { return &i.Tags })
	}, ErrInstanceNotFound},
	{"subnet-", func(r *Region, id string) *Tags {
		return tagsIn(r.subnets, id, func(s *subnetState) *Tags { return &s.Tags })
	}, ErrSubnetNotFound},
	{"vpc-", func(r *Region, id string) *Tags { return tagsIn(r.vpcs, id, func(v *VPC) *Tags { return &v.Tags }) }, ErrVPCNotFound},
	{"sg-", func(r *Region, id string) *Tags {
		return tagsIn(r.groups, id, func(g *SecurityGroup) *Tags { return &g.Tags })
	}, ErrGroupNotFound},
	{"trunk-assoc-", func(r *Region, id string) *Tags {
		return tagsIn(r.trunks, id, func(a *TrunkAssociation) *Tags { return &a.Tags })
	},
		func(id string) *APIError {
			return Errorf("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
		}},
}

// resourceTags returns the tag map of any taggable resource.
func (r *Region) resourceTags(id string) (*Tags, error) {
	for _, k := range taggables {
		if !strings.HasPrefix(id, k.prefix) {
			continue
		}
		if k.tags == nil {
			break
		}
		t := k.tags(r, id)
		if t == nil {
			return nil, k.notFound(id)
		}
		if *t == nil {
			*t = Tags{}
		}
		return t, nil
	}
	return nil, Errorf("InvalidID", "The ID '%s' is not valid", id)
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
