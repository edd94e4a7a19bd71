// Renders an Ollama Modelfile TEMPLATE with Go's own text/template, for the tests.
//
// Input (stdin, JSON): {"template": "...", "messages": [{"role": "...", "content": "..."}], "system": "..."}.
// Output (stdout): the prompt Ollama would build. The data is laid out as Ollama hands it to a chat
// template (docs/template.md in the Ollama repository): .Messages with .Role and .Content, .System, .Tools,
// .Prompt and .Response; a Modelfile SYSTEM is put first when the conversation has no system message, and
// consecutive messages of one role (tool results excepted) are joined with a blank line, as Ollama does
// before rendering. Exit 2 when the template does not parse or execute.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"time"
)

type message struct {
	Role      string `json:"role"`
	Content   string `json:"content"`
	ToolCalls []any  `json:"tool_calls,omitempty"`
}

type request struct {
	Template string    `json:"template"`
	Messages []message `json:"messages"`
	System   string    `json:"system"`
}

func collate(messages []message) (string, []*message) {
	var systems []string
	var out []*message
	for i := range messages {
		m := messages[i]
		if m.Role == "system" {
			systems = append(systems, m.Content)
		}
		if n := len(out); n > 0 && out[n-1].Role == m.Role && m.Role != "tool" {
			out[n-1].Content += "\n\n" + m.Content
			continue
		}
		out = append(out, &m)
	}
	return strings.Join(systems, "\n\n"), out
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "input:", err)
		os.Exit(2)
	}
	funcs := template.FuncMap{
		"json": func(v any) string { b, _ := json.Marshal(v); return string(b) },
		"currentDate": func(args ...string) string { return time.Now().Format("2006-01-02") },
	}
	tmpl, err := template.New("modelfile").Option("missingkey=zero").Funcs(funcs).Parse(req.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(2)
	}
	messages := req.Messages
	if req.System != "" && (len(messages) == 0 || messages[0].Role != "system") {
		messages = append([]message{{Role: "system", Content: req.System}}, messages...)
	}
	system, collated := collate(messages)
	data := map[string]any{"System": system, "Messages": collated, "Tools": nil, "Prompt": "", "Response": ""}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(2)
	}
}
