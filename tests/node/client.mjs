// The official openai npm package against a live llmserve: node client.mjs BASE_URL [EMBEDDING_MODEL]
// Prints one JSON document of what the server answered; tests/server/test_openai_node.py checks it.
import OpenAI from "openai";

const [baseURL, embeddingModel] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
const messages = [{ role: "user", content: "What is the weather in Paris?" }];
const weather = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 20 }, unit: { enum: ["C", "F"] } },
      required: ["city", "unit"],
      additionalProperties: false,
    },
  },
};
const out = {};

out.models = (await client.models.list()).data;
out.retrieved = await client.models.retrieve("tiny");
out.completion = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 5, temperature: 0 });
const stream = await client.chat.completions.create({
  model: "tiny", messages, max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true },
});
out.chunks = [];
for await (const chunk of stream) out.chunks.push(chunk);
out.tools = await client.chat.completions.create({
  model: "tiny", messages, tools: [weather], tool_choice: "required", max_tokens: 80, temperature: 0,
});
out.formatted = await client.chat.completions.create({
  model: "tiny", messages, max_tokens: 20, temperature: 0,
  response_format: {
    type: "json_schema",
    json_schema: { name: "answer", schema: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"], additionalProperties: false } },
  },
});
out.legacy = await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 4, temperature: 0 });
if (embeddingModel) {
  out.embeddings = await client.embeddings.create({ model: embeddingModel, input: ["Hello world"], encoding_format: "float" });
}
out.errors = {};
for (const [name, call] of [
  ["unknown_model", () => client.chat.completions.create({ model: "gpt-4o", messages })],
  ["bad_request", () => client.chat.completions.create({ model: "tiny", messages, temperature: 3 })],
]) {
  try {
    await call();
    out.errors[name] = "no error";
  } catch (error) {
    out.errors[name] = { class: error.constructor.name, status: error.status, code: error.code, param: error.param };
  }
}
console.log(JSON.stringify(out));
