// Package yamlx decodes vpclab's YAML files (worlds, labs, scenarios) one
// way: strictly, so a misspelt field is an error naming it, not a silent
// default.
package yamlx

import (
	"bytes"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// Decode decodes one YAML document from b into v; fields v does not have
// are errors. An empty document returns io.EOF.
func Decode(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// Load reads the YAML file at path into v as Decode does; errors name the
// file.
func Load(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := Decode(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
