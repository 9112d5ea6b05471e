// A 2025-11-25 MCP Tasks client: the TypeScript SDK 1.x's own (client.experimental.tasks).
// Usage: node ts_tasks_2025.mjs <sdk package dir> <command> [args...]
// Starts the server over stdio, lists its tools, calls generate_image as a task (the SDK
// decides that from the tool's execution.taskSupport), and prints one JSON line per message.
import { pathToFileURL } from "node:url";
import path from "node:path";

const [sdkDir, command, ...args] = process.argv.slice(2);
const load = (rel) => import(pathToFileURL(path.join(sdkDir, "dist/esm", rel)).href);
const { Client } = await load("client/index.js");
const { StdioClientTransport } = await load("client/stdio.js");

const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const client = new Client({ name: "ts-tasks-2025", version: "1.0.0" }, { capabilities: {} });
await client.connect(
  new StdioClientTransport({ command, args, env: process.env, stderr: "inherit" }),
);
print({ type: "version", version: client.getServerVersion()?.name, caps: client.getServerCapabilities() });
const tools = await client.listTools();
print({ type: "tools", tools: tools.tools.map((t) => ({ name: t.name, execution: t.execution })) });
const stream = client.experimental.tasks.callToolStream(
  { name: "generate_image", arguments: { prompt: process.env.PROMPT ?? "a TypeScript task" } },
  undefined,
  { timeout: 120000 },
);
let taskId;
for await (const message of stream) {
  if (message.type === "taskCreated") taskId = message.task.taskId;
  if (message.type === "error") print({ type: "error", message: String(message.error) });
  else print(message);
}
if (taskId) {
  print({ type: "listed", tasks: (await client.experimental.tasks.listTasks()).tasks.map((t) => t.taskId) });
  print({ type: "got", task: await client.experimental.tasks.getTask(taskId) });
}
await client.close();
