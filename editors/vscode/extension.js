// Starts `dslc lsp` for .dl files: diagnostics as you type, hovers, definitions, symbols and
// completions. The command is the setting `dslc.server.command` (default: `dslc`, on the PATH)
// with the arguments `dslc.server.args` (default: ["lsp"]).
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("dslc");
  const server = { command: config.get("server.command", "dslc"), args: config.get("server.args", ["lsp"]) };
  client = new LanguageClient("dslc", "dslc language server", server, {
    documentSelector: [{ scheme: "file", language: "dl" }, { scheme: "untitled", language: "dl" }],
  });
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
