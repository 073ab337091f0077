package ec2query

import ()

func (s *Server) createTags(q *qnode) (any, error) {
	ids, err := q.strings("ResourceId")
	if err != nil {
		return nil, err
	}
	tags, _, err := q.tagList("Tag")
	if err != nil {
		return nil, err
	}
	if err := s.region.CreateTags(ids, tags); err != nil {
		return nil, err
	}
	return returnTrue{true}, nil
}

func (s *Server) deleteTags(q *qnode) (any, error) {
	ids, err := q.strings("ResourceId")
	if err != nil {
		return nil, err
	}
	_, filters, err := q.tagList("Tag")
	if err != nil {
		return nil, err
	}
	if err := s.region.DeleteTags(ids, filters); err != nil {
		return nil, err
	}
	return returnTrue{true}, nil
}
