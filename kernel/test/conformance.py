"""The official jupyter_kernel_test suite against the `lathe` kernel (run by conformance.test.ts)."""
import unittest

import jupyter_kernel_test


class LatheKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = "lathe"

    # kernel_info and language_info
    language_name = "typescript"
    file_extension = ".ts"

    # execute, stdout and stderr, errors
    code_hello_world = 'console.log("hello, world")'
    code_stderr = 'console.error("to stderr")'
    code_generate_error = 'throw new Error("boom")'
    code_execute_result = [
        {"code": "1 + 2", "result": "3"},
        {"code": "const greeting: string = 'hi';\ngreeting.toUpperCase()", "result": "HI"},
        {"code": "[1, 2, 3].map((x) => x * 2)", "result": "[ 2, 4, 6 ]"},
    ]

    # completion, inspection and is_complete
    completion_samples = [
        {"text": "const abcdef1 = 1, abcdef2 = 2;\nabcde", "matches": {"abcdef1", "abcdef2"}},
        {"text": "Math.PI.toFix", "matches": {"toFixed"}},
        {"text": "import { recipe } from 'lathe';\nrecipe.pre", "matches": {"pretrain"}},
    ]
    code_inspect_sample = "Math.max"
    complete_code_samples = ["1 + 1", 'console.log("hi")', "function f() {\n  return 1;\n}"]
    incomplete_code_samples = ["function f() {", "const xs = [1, 2,", "if (true) {\n  foo("]
    invalid_code_samples = ["const = 1;", "a b c"]

    # display_data and clear_output
    code_display_data = [
        {"code": "display.html('<b>hi</b>')", "mime": "text/html"},
        {"code": "display.markdown('# hi')", "mime": "text/markdown"},
        {"code": "display.json({ a: 1 })", "mime": "application/json"},
    ]
    code_clear_output = "clearOutput()"

    # Shift-Tab on Lathe's API shows its signature and doc comment.
    def test_inspect_lathe_api(self):
        self.flush_channels()
        self.execute_helper("import { recipe } from 'lathe';")
        self.flush_channels()
        msg_id = self.kc.inspect("recipe.pretrain", 15)
        reply = self.get_non_kernel_info_reply(timeout=30)
        self.assertEqual(reply["parent_header"]["msg_id"], msg_id)
        self.assertTrue(reply["content"]["found"])
        text = reply["content"]["data"]["text/plain"]
        self.assertIn("function pretrain", text)
        self.assertIn("pre-training recipe", text)


    # Runtime errors name the user's cell line and quote it, without kernel frames.
    def test_error_shows_user_line(self):
        self.flush_channels()
        reply, output = self.execute_helper("const a = 1;\nconst b = (null as any).missing;", stop_on_error=False)
        self.assertEqual(reply["content"]["status"], "error")
        tb = "\n".join(output[0]["content"]["traceback"])
        self.assertIn("TypeError", tb)
        self.assertRegex(tb, r"cell \[\d+\], line 2")
        self.assertIn("> 2 | const b = (null as any).missing;", tb)
        self.assertNotIn("kernel/dist", tb)
        self.assertNotIn("node:internal", tb)


if __name__ == "__main__":
    unittest.main(verbosity=2)
