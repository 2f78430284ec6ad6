package config

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"sort"
	"strconv"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// parseYAML parses the config file's text into its one document. An empty
// file (nothing, or only comments or a null), a file of more than one
// document and a document that is not a mapping are errors, as is a YAML
// syntax error, reported at the position where the parser found it.
func parseYAML(file string, data []byte) (*yaml.Node, *Error) {
	docs, err := yamlDocuments(data)
	if err != nil {
		line, col, msg := syntaxPosition(data, err)
		return nil, &Error{File: file, Line: line, Column: col, Key: "(file)", Msg: "invalid YAML: " + msg}
	}
	if len(docs) == 0 || len(docs) == 1 && isNull(docs[0]) {
		return nil, &Error{File: file, Line: 1, Column: 1, Key: "(file)",
			Msg: "the file is empty: declare the functions to serve (see docs/config.md)"}
	}
	if len(docs) > 1 {
		n := docs[1]
		return nil, &Error{File: file, Line: n.Line, Column: n.Column, Key: "(file)",
			Msg: "a second YAML document: polyfn reads one document per file (remove the '---' or the text after it)"}
	}
	if docs[0].Kind != yaml.MappingNode {
		n := docs[0]
		return nil, &Error{File: file, Line: n.Line, Column: n.Column, Key: "(file)",
			Msg: "want a mapping of sections (http, runtimes, functions, ...), got " + kindName(n)}
	}
	return docs[0], nil
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// yamlDocuments parses every document of data; a document's node is its
// content (the document node's only child).
func yamlDocuments(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			docs = append(docs, root.Content[0])
		}
	}
}

// yamlLineRE matches the parser's error text: "yaml: line N: problem".
var yamlLineRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// yamlProblem splits a YAML parser error into the line it names (0 when
// none) and the problem.
func yamlProblem(err error) (line int, problem string) {
	s := err.Error()
	m := yamlLineRE.FindStringSubmatchIndex(s)
	if m == nil {
		return 0, s
	}
	if m[2] >= 0 {
		line, _ = strconv.Atoi(s[m[2]:m[3]])
	}
	return line, s[m[1]:]
}

// syntaxSearchBudget bounds the bytes parsed while looking for a syntax
// error's column character by character; past it the line is searched by
// bisection.
const syntaxSearchBudget = 16 << 20

// syntaxPosition returns the line and column of the YAML error err of
// data, and the problem without the parser's own line.
//
// The parser names a line only, and not always the problem's: for many
// errors it is the line where the enclosing construct began (a sequence
// that started lines before), counted from 0. So the position is the last
// character of the shortest prefix of data that fails with the same
// problem: where the parser met it. The search starts on the line before
// the one named, which cannot be after the problem; it finds the line by
// bisection over line ends, then the character from the line's start.
func syntaxPosition(data []byte, err error) (line, col int, problem string) {
	named, problem := yamlProblem(err)
	fails := func(n int) bool {
		_, err := yamlDocuments(data[:n])
		if err == nil {
			return false
		}
		_, p := yamlProblem(err)
		return p == problem
	}
	starts := []int{0}
	for i, b := range data {
		if b == '\n' && i+1 < len(data) {
			starts = append(starts, i+1)
		}
	}
	end := func(k int) int {
		if k+1 < len(starts) {
			return starts[k+1]
		}
		return len(data)
	}
	first := min(max(named-2, 0), len(starts)-1)
	k := first + sort.Search(len(starts)-first, func(i int) bool { return fails(end(first + i)) })
	if k == len(starts) {
		return max(named, 1), 1, problem
	}
	s, e := starts[k], end(k)
	n := s + 1
	if (e-s)*e <= syntaxSearchBudget {
		for n < e && !fails(n) {
			n++
		}
	} else {
		n += sort.Search(e-n, func(i int) bool { return fails(s + 1 + i) })
	}
	return k + 1, utf8.RuneCount(data[s:n-1]) + 1, problem
}
