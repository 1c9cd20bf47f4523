import LlamaServer
import TestSupport
import Testing

/// Chat formats picked from a GGUF's `tokenizer.chat_template`: the templates as the model
/// authors publish them (Jinja, from each model's tokenizer_config.json), the prompt each
/// yields through the chat route, and the name `/props` gives.
@Suite("Chat templates from tokenizer.chat_template")
struct ChatTemplateTests {
    static let llama2 = #"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"#
    static let llama3 = #"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"#
    static let chatml = #"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#
    static let mistral = #"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"#
    static let zephyr = #"{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token }}{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}"#

    @Test("each published template is recognised; others and none fall back to Llama 2", arguments: [
        (llama2, "llama2", true), (llama3, "llama3", true), (chatml, "chatml", true), (mistral, "mistral", true),
        (zephyr, "llama2", false), ("", "llama2", false),
    ])
    func detection(template: String, name: String, recognised: Bool) {
        let (found, known) = ChatTemplate.detect(template)
        #expect(found.rawValue == name)
        #expect(known == recognised)
        #expect(ChatTemplate.detect(nil) == (.llama2, false))
    }

    /// A system and a user message, and the prompt text each template writes for them (BOS
    /// as token 1, control markers as text: the scripted vocabulary has no special tokens).
    static let conversation = #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}"#
    static let rendered: [(String, String, String)] = [
        (llama2, "llama2", "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"),
        (llama3, "llama3", "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        (chatml, "chatml", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        // Mistral's template has no system role: the system text opens the first user message.
        (mistral, "mistral", "[INST] Be brief.\n\nHi [/INST]"),
    ]

    @Test("the chat route writes the template's prompt and /props names the template", arguments: 0..<rendered.count)
    func promptAndProps(_ index: Int) async throws {
        let (template, name, text) = Self.rendered[index]
        let backend = ScriptedBackend(script: [" ok"], chatTemplate: template)
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/chat/completions", Self.conversation)
            #expect(reply.status == 200)
            let props = try await client.get("/props")
            #expect(props.json["chat_template"]?.stringValue == name)
            #expect(props.json["chat_template_source"]?.stringValue == template)
        }
        #expect(backend.jobs.first?.promptTokens == [1] + byteTokens(text))
    }

    @Test("/props says when the GGUF's template is not one it knows")
    func unknownTemplate() async throws {
        try await withServer(ScriptedBackend(chatTemplate: Self.zephyr)) { client in
            let name = try await client.get("/props").json["chat_template"]?.stringValue ?? ""
            #expect(name.hasPrefix("llama2 ") && name.contains("default"))
        }
    }
}
